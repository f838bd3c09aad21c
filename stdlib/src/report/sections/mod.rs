//! One function a report section, each reading its artifacts.

use super::*;

mod cpt;
mod curation;
mod davidson;
mod failure_modes;
mod gain;
mod heldout;
mod judge;
mod larger;
mod mcqa;
mod training;
mod trajectory;

pub(super) use cpt::*;
pub(super) use curation::*;
pub(super) use davidson::*;
pub(super) use failure_modes::*;
pub(super) use gain::*;
pub(super) use heldout::*;
pub(super) use judge::*;
pub(super) use larger::*;
pub(super) use mcqa::*;
pub(super) use training::*;
pub(super) use trajectory::*;

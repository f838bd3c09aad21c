//! The op contract, as the ops see it: the engine's [`flow_engine::op`]
//! (which owns it) plus the test helpers of this crate's op tests.

pub use flow_engine::op::*;

use std::path::PathBuf;

/// One item of a list param of nodes: a node (its directory) or a file, or
/// a map node (the list of its elements' directories).
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(untagged)]
pub enum NodeItem {
    One(PathBuf),
    Map(Vec<PathBuf>),
}

impl NodeItem {
    /// The item's paths: one, or a map node's elements in order.
    pub fn paths(&self) -> &[PathBuf] {
        match self {
            NodeItem::One(p) => std::slice::from_ref(p),
            NodeItem::Map(ps) => ps,
        }
    }
}

/// Builds the [`OpContext`] of an op's unit tests: CPU, no progress, log
/// lines collected, a fresh out directory.
#[cfg(test)]
pub(crate) mod testing {
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::sync::atomic::AtomicBool;
    use std::sync::Mutex;

    use flow_engine::op::{Device, NoProgress, Op, OpContext, OpResult, Outputs, Value};

    /// How the context is set up.
    #[derive(Clone, Debug)]
    pub struct RunOptions {
        pub threads: usize,
        /// `OpContext::workdir`; the current directory when `None`.
        pub workdir: Option<std::path::PathBuf>,
        /// Start with the cancel flag set (as after Ctrl-C).
        pub cancelled: bool,
        /// `OpContext::input_ids`: the inputs' identities, as the executor
        /// would give them (none: every path is named as given).
        pub input_ids: BTreeMap<std::path::PathBuf, String>,
    }

    impl Default for RunOptions {
        fn default() -> Self {
            RunOptions {
                threads: 2,
                workdir: None,
                cancelled: false,
                input_ids: BTreeMap::new(),
            }
        }
    }

    /// `params` over the defaults of `op`'s spec. Panics on a name the op
    /// does not declare and on a required parameter left out, so a test
    /// cannot pass by omission.
    pub fn full_params(op: &dyn Op, params: &[(&str, Value)]) -> BTreeMap<String, Value> {
        let spec = op.spec();
        let mut map: BTreeMap<String, Value> = spec
            .params
            .iter()
            .filter_map(|p| p.default.clone().map(|d| (p.name.to_owned(), d)))
            .collect();
        for (k, v) in params {
            assert!(
                spec.params.iter().any(|p| p.name == *k),
                "op {} has no param {k}",
                spec.name
            );
            map.insert((*k).to_owned(), v.clone());
        }
        for p in &spec.params {
            assert!(
                map.contains_key(p.name),
                "test did not give required param {} of op {}",
                p.name,
                spec.name
            );
        }
        map
    }

    /// Asserts that `op`'s spec declares a range for param `name` that
    /// excludes `value`: `flow check` rejects it with a span before the op
    /// runs (the op itself no longer checks it).
    pub fn assert_outside_declared_range(op: &dyn Op, name: &str, value: Value) {
        let spec = op.spec();
        let param = spec
            .params
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("op {} has no param {name}", spec.name));
        assert!(
            param.out_of_range(&value).is_some(),
            "{}.{name}: {value:?} is within its declared range {:?}",
            spec.name,
            param.range
        );
    }

    /// Runs `f` with a context over `params` writing into `out_dir`
    /// (created if missing); returns what `f` returned and the log lines.
    pub fn with_context<R>(
        params: BTreeMap<String, Value>,
        out_dir: &Path,
        options: RunOptions,
        f: impl FnOnce(&OpContext) -> R,
    ) -> (R, Vec<String>) {
        std::fs::create_dir_all(out_dir).expect("create out dir");
        let lines = Mutex::new(Vec::new());
        let log = |l: &str| lines.lock().expect("log lock").push(l.to_owned());
        let cancel = AtomicBool::new(options.cancelled);
        let ctx = OpContext {
            params,
            out_dir: out_dir.to_owned(),
            workdir: options
                .workdir
                .clone()
                .unwrap_or_else(|| std::env::current_dir().expect("current dir")),
            threads: options.threads,
            device: Device::Cpu,
            progress: &NoProgress,
            log: &log,
            cancel: &cancel,
            input_ids: options.input_ids.clone(),
        };
        let r = f(&ctx);
        drop(ctx);
        (r, lines.into_inner().expect("log lock"))
    }

    /// Runs `op` with `params` over its defaults ([`full_params`]) into
    /// `out_dir`; returns the outputs and the log lines.
    pub fn run_op_logged(
        op: &dyn Op,
        params: &[(&str, Value)],
        out_dir: &Path,
    ) -> (OpResult<Outputs>, Vec<String>) {
        with_context(
            full_params(op, params),
            out_dir,
            RunOptions::default(),
            |ctx| op.run(ctx),
        )
    }

    /// [`run_op_logged`] without the log.
    pub fn run_op(op: &dyn Op, params: &[(&str, Value)], out_dir: &Path) -> OpResult<Outputs> {
        run_op_logged(op, params, out_dir).0
    }
}

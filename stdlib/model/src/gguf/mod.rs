//! GGUF import (not yet written).

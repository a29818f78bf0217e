"""Applications on top of the library: the command line (`cli`), resumable sweeps
(`sweep`, `sweep_config`), the comparison report (`report`) and figures (`plotting`)."""

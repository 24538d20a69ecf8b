//! `herald serve`: the broker as a process: defaults, config, signals, restarts and crashes.

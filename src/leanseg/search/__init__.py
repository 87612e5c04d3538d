"""Search over training strategies (and, later, architectures): spaces as data, ask/tell controllers,
executors that run trials locally or on Ray, and a resumable journal."""

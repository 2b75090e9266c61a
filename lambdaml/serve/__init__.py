"""What runs inside a model replica: the Serve deployment, the model runtime, log capture,
streams, the predict threads, metrics, and the tracker that reports predictions to the control plane."""

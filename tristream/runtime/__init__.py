"""The runtime: roles (EnvWorker, InferenceWorker, Learner), channels, weight sync, backends, wiring."""

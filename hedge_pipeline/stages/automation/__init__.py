"""Jobs, the nightly schedule and the retrain sensors that drive the stages."""

"""An example mmal metric plugin: the multiclass Brier score of the fused model."""

"""A template mmal plugin: copy this folder to start your own strategy distribution."""

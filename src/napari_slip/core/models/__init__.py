"""Models: the weights registry and downloads, SAM and CLIP loaders, the promptable
SAM interface, and the process-wide model hub."""

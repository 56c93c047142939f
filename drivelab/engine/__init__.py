"""Data engine: embeddings, latent-space map, selection, pruning, label audit."""

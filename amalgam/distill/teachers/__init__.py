"""The frozen teachers: loading, training, the ensemble that runs them, and the cache of
their outputs with its store."""

"""Where the bus keeps state outside a pipeline's actors: Ray's GCS key-value store (`kv_store`)."""

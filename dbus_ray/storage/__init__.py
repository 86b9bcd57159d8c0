"""Where the bus keeps state outside a pipeline's actors: Ray's GCS key-value store (`kv_store`), and the
controller's durable state that outlives the cluster (`durable`: a directory or a compacted Kafka topic)."""

"""MySQL/MariaDB binlog helpers of the `mysql` source: column decoding (`types`) and server checks
(`preflight`)."""

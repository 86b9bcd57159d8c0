"""Debugging a pipeline from a notebook (the `Bus` calls of `dbus_ray.client` delegate here):

- `binlog`: a window of a server's binlog (bounds by position, GTID or time) read with the `mysql` source's stream;
- `history`: the changes of rows (`history`) and the rows of one transaction (`transaction`) as pyarrow Tables;
- `trace`: where one row change is in a pipeline: read, acknowledged by each sink, its Kafka topic/partition/offset;
- `display`: status, metrics, the DAG picture and the lag plot for notebooks.

Nothing here imports the actors (`dbus_ray.actors`).
"""

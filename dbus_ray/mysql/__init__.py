"""The `mysql` source: a MySQL/MariaDB binlog read as a replica (see `dbus_ray.mysql.source`)."""

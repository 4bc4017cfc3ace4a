# shellcheck shell=bash
# Sourced by the mysql image's entrypoint on the first start (docker-entrypoint-initdb.d), after
# it created MYSQL_USER. Dropline's MySQL driver (sqlx, built without TLS or RSA) cannot do the
# full caching_sha2_password exchange that MySQL 8 asks for on a cold cache, so the Dropline
# account uses mysql_native_password (enabled with --mysql-native-password=ON in compose.yaml).
docker_process_sql --database=mysql <<-SQL
	ALTER USER '${MYSQL_USER}'@'%' IDENTIFIED WITH mysql_native_password BY '${MYSQL_PASSWORD}';
	GRANT ALL PRIVILEGES ON \`${MYSQL_DATABASE}\`.* TO '${MYSQL_USER}'@'%';
	FLUSH PRIVILEGES;
SQL

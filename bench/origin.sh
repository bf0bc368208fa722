# Sourced by the bench scripts: start_origin DIR PORT starts an nginx
# serving DIR (with a 13-byte /small) on 127.0.0.1:PORT; its pid file is
# DIR/nginx.pid.
start_origin() {
  local dir=$1 port=$2
  mkdir -p "$dir/logs"
  printf 'small origin\n' >"$dir/small"
  cat >"$dir/nginx.conf" <<NGINX
worker_processes 1; pid $dir/nginx.pid; error_log $dir/logs/error.log;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 100000;
  server { listen 127.0.0.1:$port; root $dir; location / { } } }
NGINX
  # nginx's workers may run as another user: let them read the files.
  chmod o+x "$(dirname "$dir")"; chmod -R o+rX "$dir"
  nginx -p "$dir" -c "$dir/nginx.conf"
  for _ in $(seq 50); do [ -s "$dir/nginx.pid" ] && break; sleep 0.1; done
}

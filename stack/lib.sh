# shellcheck shell=bash disable=SC2034  # variables are used by the scripts sourcing this
# Shared helpers for stack/up, stack/down and stack/status. Sourced, not run.
#
# Layout under $STACK_DIR (git-ignored):
#   neo4j/lib/          Neo4j jars resolved from Maven Central (+ .built stamp)
#   neo4j/conf/         generated neo4j.conf
#   neo4j/run/          Neo4j's own run dir
#   data/neo4j/         Neo4j databases, transaction logs, auth
#   data/source/        HAPI source server data (owned by the HAPI jar)
#   data/target/        HAPI target server data (owned by the HAPI jar)
#   data/validating/    HAPI validating target data (owned by the HAPI jar)
#   data/protected-source/, data/protected-target/   protected HAPI servers' data
#   data/postgres/      the PostgreSQL cluster (HAPI_DB=postgres; owned by the user running it)
#   data/keycloak/      Keycloak's data dir (its H2 database h2/, import/ with the realm file)
#   keycloak/builds/ID/ one Keycloak distribution each (from Maven Central, `kc.sh build` done);
#                       its data/ is a link to data/keycloak/. Keycloak runs from the newest.
#   keycloak/jwt-*      the fhirgraph-jwt client's key pair (private key 0600), public JWK, kid;
#   keycloak/jwt.env    and the placeholders of the realm file (stack/keycloak-keys writes them)
#   hapi/builds/ID/     one Maven build of stack/hapi each; servers run its fhirgraph-hapi.jar
#   logs/NAME.log       console output of each service (previous run: NAME.log.1)
#   logs/neo4j/         Neo4j's own logs (debug.log, neo4j.log, ...)
#   logs/*-build.log    Maven output of the builds
#   run/NAME.pid        pid of each service started by stack/up

STACK_SCRIPTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$STACK_SCRIPTS_DIR/.." && pwd)"
# shellcheck source=config.env
source "$STACK_SCRIPTS_DIR/config.env"

mkdir -p "$STACK_DIR"
STACK_DIR="$(cd "$STACK_DIR" && pwd)"
LOG_DIR="$STACK_DIR/logs"
RUN_DIR="$STACK_DIR/run"

NEO4J_HOME_DIR="$STACK_DIR/neo4j"
NEO4J_LIB_DIR="$NEO4J_HOME_DIR/lib"
NEO4J_CONF_DIR="$NEO4J_HOME_DIR/conf"
NEO4J_DATA_DIR="$STACK_DIR/data/neo4j"
NEO4J_POM="$STACK_SCRIPTS_DIR/neo4j/pom.xml"
NEO4J_BOLT_CHECK="$STACK_SCRIPTS_DIR/neo4j/boltcheck.py"

HAPI_DIR="$STACK_SCRIPTS_DIR/hapi"
# Every build of stack/hapi gets its own directory (Maven's build directory), and the
# servers run the jar in it: a rebuild never replaces the jar under a running server,
# whose JVM reads classes from it lazily. stack/up deletes builds no server runs.
HAPI_BUILDS_DIR="$STACK_DIR/hapi/builds"
# What the validating server's CapabilityStatement says (FhirServletConfig.VALIDATING_MARKER).
HAPI_VALIDATING_MARKER="(validates requests)"

KEYCLOAK_DIR="$STACK_DIR/keycloak"
KEYCLOAK_BUILDS_DIR="$KEYCLOAK_DIR/builds"
KEYCLOAK_DATA_DIR="$STACK_DIR/data/keycloak"
KEYCLOAK_REALM_TEMPLATE="$STACK_SCRIPTS_DIR/keycloak/fhirgraph-realm.json"
KEYCLOAK_REALM=fhirgraph
# Build-time options of `kc.sh build` (the rest are given at start, see stack/up).
KEYCLOAK_BUILD_OPTS=(--db=dev-file)
KEYCLOAK_PRIVATE_KEY="$KEYCLOAK_DIR/jwt-private.pem"
KEYCLOAK_PUBLIC_KEY="$KEYCLOAK_DIR/jwt-public.pem"
KEYCLOAK_JWT_ENV="$KEYCLOAK_DIR/jwt.env"

# PostgreSQL (HAPI_DB=postgres): Debian's binaries, the cluster's directory, and the OS user
# it runs as (PostgreSQL refuses to run as root: then the package's user 'postgres').
POSTGRES_BIN_DIR="/usr/lib/postgresql/$POSTGRES_VERSION/bin"
POSTGRES_DATA_DIR="$STACK_DIR/data/postgres"
POSTGRES_OS_USER="$(id -un)"
[[ "$(id -u)" -eq 0 ]] && POSTGRES_OS_USER=postgres
case "$HAPI_DB" in
  h2|postgres) ;;
  *) printf 'stack/%s: HAPI_DB must be h2 or postgres, not %s\n' "$(basename "$0")" "$HAPI_DB" >&2; exit 1 ;;
esac

# Seconds to wait for a service to become healthy / to stop after SIGTERM.
STACK_HEALTH_TIMEOUT="${STACK_HEALTH_TIMEOUT:-180}"
STACK_STOP_TIMEOUT="${STACK_STOP_TIMEOUT:-60}"

# stack/up without arguments starts DEFAULT_SERVICES; the others only when named.
# stack/down and stack/status without arguments cover ALL_SERVICES.
# With HAPI_DB=postgres the HAPI servers need the service postgres, which is then a default one.
DEFAULT_SERVICES=(neo4j source target)
[[ "$HAPI_DB" == postgres ]] && DEFAULT_SERVICES=(neo4j postgres source target)
ALL_SERVICES=(neo4j postgres source target validating keycloak protected-source protected-target)
HAPI_SERVICES=(source target validating protected-source protected-target)
# 'protected' on the command line: Keycloak and the two HAPI servers that need its tokens.
PROTECTED_GROUP=(keycloak protected-source protected-target)

# Prefix for messages, e.g. "stack/up".
PROG="stack/$(basename "$0")"

say() { printf '%s: %s\n' "$PROG" "$*"; }
die() { say "$*" >&2; exit 1; }

# A path as the user should read it: relative to the repo when inside it.
rel() {
  case "$1" in
    "$REPO_DIR"/*) printf '%s' "${1#"$REPO_DIR"/}" ;;
    *) printf '%s' "$1" ;;
  esac
}

is_service() {
  local s
  for s in "${ALL_SERVICES[@]}"; do [[ "$1" == "$s" ]] && return 0; done
  return 1
}

is_optional() {  # not started by a plain stack/up
  local s
  for s in "${DEFAULT_SERVICES[@]}"; do [[ "$1" == "$s" ]] && return 1; done
  return 0
}

# Parse service names from the command line into SERVICES; without any, SERVICES is
# NO_ARGS (a script may set it after sourcing this) and NAMED is empty.
# 'all' is every service, the optional ones included; 'protected' is PROTECTED_GROUP.
NO_ARGS=("${DEFAULT_SERVICES[@]}")
parse_services() {
  SERVICES=(); NAMED=""
  local a
  for a in "$@"; do
    case "$a" in
      -h|--help)
        echo "usage: $PROG [neo4j|postgres|source|target|validating|keycloak|protected-source|protected-target|protected|all ...]   (default: ${NO_ARGS[*]})"
        exit 0 ;;
      all) SERVICES+=("${ALL_SERVICES[@]}"); NAMED=1 ;;
      protected) SERVICES+=("${PROTECTED_GROUP[@]}"); NAMED=1 ;;
      *) is_service "$a" || die "unknown service '$a' (expected: ${ALL_SERVICES[*]})"
         SERVICES+=("$a"); NAMED=1 ;;
    esac
  done
  [[ ${#SERVICES[@]} -gt 0 ]] || SERVICES=("${NO_ARGS[@]}")
  canonical_services
}

# Deduplicate SERVICES, in the order of ALL_SERVICES.
canonical_services() {
  local out=() s t
  for s in "${ALL_SERVICES[@]}"; do
    for t in "${SERVICES[@]}"; do
      if [[ "$s" == "$t" ]]; then out+=("$s"); break; fi
    done
  done
  SERVICES=("${out[@]}")
}

log_file() { printf '%s/%s.log' "$LOG_DIR" "$1"; }
pid_file() { printf '%s/%s.pid' "$RUN_DIR" "$1"; }

# The port(s) a service listens on and the config.env variable for each.
service_ports() {
  case "$1" in
    neo4j) echo "$NEO4J_HTTP_PORT:NEO4J_HTTP_PORT $NEO4J_BOLT_PORT:NEO4J_BOLT_PORT" ;;
    postgres) echo "$POSTGRES_PORT:POSTGRES_PORT" ;;
    keycloak) echo "$KEYCLOAK_PORT:KEYCLOAK_PORT" ;;
    *) echo "$(hapi_port "$1"):$(hapi_port_var "$1")" ;;
  esac
}

hapi_port_var() {
  case "$1" in
    source) echo HAPI_SOURCE_PORT ;;
    target) echo HAPI_TARGET_PORT ;;
    validating) echo HAPI_VALIDATING_PORT ;;
    protected-source) echo HAPI_PROTECTED_SOURCE_PORT ;;
    protected-target) echo HAPI_PROTECTED_TARGET_PORT ;;
  esac
}
is_protected() { [[ "$1" == protected-* ]]; }
hapi_port() { local var; var="$(hapi_port_var "$1")"; printf '%s\n' "${!var}"; }
fhir_base() { printf 'http://127.0.0.1:%s/fhir' "$(hapi_port "$1")"; }
# The database of HAPI server NAME in the PostgreSQL cluster (protected-source -> protected_source).
postgres_db() { printf '%s\n' "${1//-/_}"; }
postgres_jdbc_url() { printf 'jdbc:postgresql://127.0.0.1:%s/%s' "$POSTGRES_PORT" "$(postgres_db "$1")"; }
bolt_uri() { printf 'bolt://127.0.0.1:%s' "$NEO4J_BOLT_PORT"; }
browser_url() { printf 'http://127.0.0.1:%s/browser/' "$NEO4J_HTTP_PORT"; }
# The issuer is fixed (--hostname) so that tokens say the same whoever asks.
keycloak_url() { printf 'http://127.0.0.1:%s' "$KEYCLOAK_PORT"; }
keycloak_issuer() { printf '%s/realms/%s' "$(keycloak_url)" "$KEYCLOAK_REALM"; }
keycloak_token_endpoint() { printf '%s/protocol/openid-connect/token' "$(keycloak_issuer)"; }
keycloak_jwks_uri() { printf '%s/protocol/openid-connect/certs' "$(keycloak_issuer)"; }

service_url() {
  case "$1" in
    neo4j) printf '%s  %s' "$(bolt_uri)" "$(browser_url)" ;;
    postgres) printf 'postgresql://%s@127.0.0.1:%s' "$POSTGRES_USER" "$POSTGRES_PORT" ;;
    keycloak) keycloak_issuer ;;
    *) fhir_base "$1" ;;
  esac
}

# Arguments that the command line of a running service must contain (a
# leading '*' means "an argument ending in"). They pin the process to this
# STACK_DIR, so the stack of another checkout is never taken for ours.
service_markers() {
  case "$1" in
    neo4j) printf '%s\n' "org.neo4j.server.CommunityEntryPoint" "--home-dir=$NEO4J_HOME_DIR" ;;
    postgres) printf '%s\n' "-D" "$POSTGRES_DATA_DIR" ;;
    keycloak) printf '%s\n' "io.quarkus.bootstrap.runner.QuarkusEntryPoint" "-Dfhirgraph.data-dir=$KEYCLOAK_DATA_DIR" ;;
    *) printf '%s\n' "*/fhirgraph-hapi.jar" "--fhirgraph.data-dir=$STACK_DIR/data/$1" ;;
  esac
}

# True if PID is alive, is a java process (postgres: PostgreSQL's postmaster) and its
# command line carries all the markers of service NAME.
pid_matches() {
  local pid="$1" name="$2" m a found program=java
  local -a args=()
  [[ "$name" == postgres ]] && program=postgres
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [[ -r "/proc/$pid/cmdline" ]] || return 1
  mapfile -d '' -t args < "/proc/$pid/cmdline" 2>/dev/null || return 1
  [[ ${#args[@]} -gt 0 && "$(basename -- "${args[0]}")" == "$program" ]] || return 1
  while IFS= read -r m; do
    found=""
    for a in "${args[@]}"; do
      if [[ "$m" == '*'* ]]; then [[ "$a" == *"${m#'*'}" ]] && { found=1; break; }
      else [[ "$a" == "$m" ]] && { found=1; break; }; fi
    done
    [[ -n "$found" ]] || return 1
  done < <(service_markers "$name")
  return 0
}

# Print the pid of the running service NAME (from its pid file, or, if the
# pid file was lost, by scanning /proc; the pid file is then restored).
# Returns 1 if it is not running. A stale pid file is removed.
service_pid() {
  local name="$1" pf pid p
  pf="$(pid_file "$name")"
  if [[ -f "$pf" ]]; then
    pid="$(tr -dc '0-9' < "$pf" 2>/dev/null || true)"
    if pid_matches "$pid" "$name"; then echo "$pid"; return 0; fi
    rm -f "$pf"
  fi
  for p in /proc/[0-9]*; do
    pid="${p#/proc/}"
    [[ "$pid" == "$$" ]] && continue
    if pid_matches "$pid" "$name"; then
      mkdir -p "$RUN_DIR"; echo "$pid" > "$pf"
      echo "$pid"; return 0
    fi
  done
  return 1
}

# A running service keeps the ports it was started with, even if config.env
# or the environment now say otherwise. Point the port variables at the ports
# the running process really uses (from its command line, or for Neo4j from
# the neo4j.conf generated when it started), noting any difference on stderr.
use_running_ports() {  # use_running_ports NAME PID
  local name="$1" pid="$2" a port var cur
  local -a args=()
  case "$name" in
    neo4j)
      for var in NEO4J_HTTP_PORT NEO4J_BOLT_PORT; do
        local key=server.http.listen_address
        [[ "$var" == NEO4J_BOLT_PORT ]] && key=server.bolt.listen_address
        port="$(sed -n "s/^${key//./\\.}=.*:\([0-9]*\)$/\1/p" "$NEO4J_CONF_DIR/neo4j.conf" 2>/dev/null | tail -n1)"
        [[ -n "$port" ]] || continue
        cur="${!var}"
        if [[ "$port" != "$cur" ]]; then
          say "note: neo4j is running on port $port, not $var=$cur (stack/down neo4j, then stack/up, to apply)" >&2
          printf -v "$var" '%s' "$port"
        fi
      done ;;
    *)
      local opt=--server.port= db=h2
      var="$(hapi_port_var "$name")"
      if [[ "$name" == keycloak ]]; then opt=--http-port=; var=KEYCLOAK_PORT; fi
      if [[ "$name" == postgres ]]; then opt=--port=; var=POSTGRES_PORT; fi
      mapfile -d '' -t args < "/proc/$pid/cmdline" 2>/dev/null || return 0
      port=""
      for a in "${args[@]}"; do
        [[ "$a" == "$opt"* ]] && port="${a#"$opt"}"
        [[ "$a" == --fhirgraph.db=postgres ]] && db=postgres
      done
      if [[ -n "$var" && "$name" != keycloak && "$name" != postgres && "$db" != "$HAPI_DB" ]]; then
        say "note: $name is running on $db, not HAPI_DB=$HAPI_DB (stack/down $name, then stack/up $name, to apply)" >&2
      fi
      cur="${!var}"
      if [[ -n "$port" && "$port" != "$cur" ]]; then
        say "note: $name is running on port $port, not $var=$cur (stack/down $name, then stack/up, to apply)" >&2
        printf -v "$var" '%s' "$port"
      fi ;;
  esac
  return 0
}

# The jar a running HAPI server was started from (its -jar argument).
service_jar() {  # service_jar PID
  local a prev=""
  local -a args=()
  mapfile -d '' -t args < "/proc/$1/cmdline" 2>/dev/null || return 1
  for a in "${args[@]}"; do
    if [[ "$prev" == -jar ]]; then printf '%s\n' "$a"; return 0; fi
    prev="$a"
  done
  return 1
}

# The Keycloak home (-Dkc.home.dir) a running Keycloak was started from.
service_keycloak_home() {  # service_keycloak_home PID
  local a
  local -a args=()
  mapfile -d '' -t args < "/proc/$1/cmdline" 2>/dev/null || return 1
  for a in "${args[@]}"; do
    if [[ "$a" == -Dkc.home.dir=* ]]; then printf '%s\n' "${a#-Dkc.home.dir=}"; return 0; fi
  done
  return 1
}

# The newest complete build of stack/hapi (a jar whose build finished), if any.
hapi_latest_jar() {
  local d latest=""
  for d in "$HAPI_BUILDS_DIR"/*/; do
    d="${d%/}"
    [[ -f "$d/.built" && -f "$d/fhirgraph-hapi.jar" ]] || continue
    [[ -z "$latest" || "$d" > "$latest" ]] && latest="$d"
  done
  [[ -n "$latest" ]] || return 1
  printf '%s/fhirgraph-hapi.jar\n' "$latest"
}

# True if something accepts TCP connections on 127.0.0.1:PORT.
port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# ---- health checks: 0 healthy, 1 not (yet), 2 fatal (message on stdout) ----

health_neo4j() {
  local code out rc
  code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$NEO4J_HTTP_PORT/" 2>/dev/null || true)"
  [[ "$code" == 200 ]] || return 1
  rc=0
  out="$(NEO4J_USER="$NEO4J_USER" NEO4J_PASSWORD="$NEO4J_PASSWORD" \
         python3 "$NEO4J_BOLT_CHECK" 127.0.0.1 "$NEO4J_BOLT_PORT" 2>&1)" || rc=$?
  if [[ $rc -eq 2 ]]; then
    echo "neo4j rejected user '$NEO4J_USER' with the password in NEO4J_PASSWORD ($out); the database in $(rel "$NEO4J_DATA_DIR") was initialised with another password: set NEO4J_PASSWORD back, or run stack/down neo4j and delete $(rel "$NEO4J_DATA_DIR") to start empty"
    return 2
  fi
  [[ $rc -eq 0 ]] || return 1
  out="$(curl -s --max-time 5 "$(browser_url)" 2>/dev/null || true)"
  [[ "$out" == *"<title>Neo4j Browser</title>"* ]] || return 1
  return 0
}

health_hapi() {
  local body code
  body="$(curl -s -f --max-time 30 -H 'Accept: application/fhir+json' \
          "$(fhir_base "$1")/metadata" 2>/dev/null)" || return 1
  grep -Eq '"resourceType"[[:space:]]*:[[:space:]]*"CapabilityStatement"' <<<"$body" || return 1
  if [[ "$1" == validating ]] && ! grep -qF "$HAPI_VALIDATING_MARKER" <<<"$body"; then
    echo "validating answers on $(fhir_base "$1") but does not validate requests (its jar predates fhirgraph.validate-requests?): run stack/down validating, then stack/up validating"
    return 2
  fi
  if is_protected "$1"; then
    # Protected: it names Keycloak's token endpoint, and refuses a request without a token.
    body="$(curl -s --max-time 30 "$(fhir_base "$1")/.well-known/smart-configuration" 2>/dev/null || true)"
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 30 "$(fhir_base "$1")/Patient?_count=1" 2>/dev/null || true)"
    if [[ "$body" != *"\"token_endpoint\":\"$(keycloak_token_endpoint)\""* || "$code" != 401 ]]; then
      echo "$1 answers on $(fhir_base "$1") but is not protected by $(keycloak_issuer) (GET Patient: $code; an older jar, or other settings?): run stack/down $1, then stack/up protected"
      return 2
    fi
  fi
  return 0
}

# Keycloak is healthy once the realm answers its discovery document with the issuer we expect.
health_keycloak() {
  local body
  body="$(curl -s -f --max-time 10 "$(keycloak_issuer)/.well-known/openid-configuration" 2>/dev/null)" || return 1
  if [[ "$body" != *"\"issuer\":\"$(keycloak_issuer)\""* ]]; then
    echo "keycloak answers on $(keycloak_url) but its realm $KEYCLOAK_REALM has another issuer than $(keycloak_issuer): run stack/down keycloak, then stack/up keycloak"
    return 2
  fi
  return 0
}

# PostgreSQL is healthy once our user logs in with POSTGRES_PASSWORD over TCP.
health_postgres() {
  local out rc=0
  "$POSTGRES_BIN_DIR/pg_isready" -q -h 127.0.0.1 -p "$POSTGRES_PORT" -d postgres -t 5 >/dev/null 2>&1 || return 1
  out="$(postgres_sql postgres 'SELECT 1' 2>&1)" || rc=$?
  [[ $rc -eq 0 && "$out" == 1 ]] && return 0
  if [[ "$out" == *"password authentication failed"* || "$out" == *"does not exist"* ]]; then
    echo "postgres rejected user '$POSTGRES_USER' with the password in POSTGRES_PASSWORD; the cluster in $(rel "$POSTGRES_DATA_DIR") was initialised with other settings: set them back, or run stack/down postgres and delete $(rel "$POSTGRES_DATA_DIR") to start empty"
    return 2
  fi
  return 1
}

# Run one SQL statement in DATABASE as POSTGRES_USER over TCP; print the result unaligned.
postgres_sql() {  # postgres_sql DATABASE SQL
  PGPASSWORD="$POSTGRES_PASSWORD" PGCONNECT_TIMEOUT=5 "$POSTGRES_BIN_DIR/psql" -X -q -t -A \
    -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$POSTGRES_PORT" -U "$POSTGRES_USER" -d "$1" -c "$2"
}

health() {
  case "$1" in
    neo4j) health_neo4j ;;
    postgres) health_postgres ;;
    keycloak) health_keycloak ;;
    *) health_hapi "$1" ;;
  esac
}

# ---- the fhirgraph-jwt client's key pair ----------------------------------------

# Generate the RSA key pair (once; the private key is kept, readable only by the user) and
# (again whenever missing or older than the key) the public key, JWK, kid and jwt.env.
ensure_keycloak_keys() {
  command -v openssl >/dev/null 2>&1 ||
    die "openssl not found (needed to generate the signed-JWT client's key pair): install it (apt-get install openssl)"
  mkdir -p "$KEYCLOAK_DIR"
  if [[ ! -s "$KEYCLOAK_PRIVATE_KEY" ]]; then
    local tmp="$KEYCLOAK_PRIVATE_KEY.tmp.$$"
    if ! (umask 077 && openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$tmp") 2>/dev/null; then
      rm -f "$tmp"
      die "openssl could not generate an RSA key pair in $(rel "$KEYCLOAK_DIR")"
    fi
    mv -f "$tmp" "$KEYCLOAK_PRIVATE_KEY"
    rm -f "$KEYCLOAK_PUBLIC_KEY"
    say "generated the fhirgraph-jwt client's key pair: $(rel "$KEYCLOAK_PRIVATE_KEY")"
  fi
  chmod 600 "$KEYCLOAK_PRIVATE_KEY"
  if [[ ! -s "$KEYCLOAK_PUBLIC_KEY" || ! -s "$KEYCLOAK_JWT_ENV" || "$KEYCLOAK_PRIVATE_KEY" -nt "$KEYCLOAK_JWT_ENV" ]]; then
    openssl pkey -in "$KEYCLOAK_PRIVATE_KEY" -pubout -out "$KEYCLOAK_PUBLIC_KEY" 2>/dev/null ||
      die "openssl could not read $(rel "$KEYCLOAK_PRIVATE_KEY")"
    python3 "$STACK_SCRIPTS_DIR/keycloak/jwk.py" "$KEYCLOAK_PUBLIC_KEY" "$KEYCLOAK_DIR" ||
      die "could not write the public JWK into $(rel "$KEYCLOAK_DIR")"
  fi
}

# Stop service NAME if it is running: SIGTERM to its process group (or the
# pid alone), wait up to STACK_STOP_TIMEOUT seconds, then SIGKILL.
stop_service() {
  local name="$1" pid pgid i
  if ! pid="$(service_pid "$name")"; then
    rm -f "$(pid_file "$name")"
    return 0
  fi
  pgid="$(ps -o pgid= -p "$pid" 2>/dev/null | tr -d ' ' || true)"
  # Only signal the whole group when the service leads its own session
  # (stack/up starts it with setsid), never our caller's group.
  # PostgreSQL: SIGINT to the postmaster alone is its fast shutdown (SIGTERM would wait for
  # every client to disconnect); it stops its own server processes.
  if [[ "$name" == postgres ]]; then kill -INT "$pid" 2>/dev/null || true
  elif [[ "$pgid" == "$pid" ]]; then kill -TERM -- "-$pid" 2>/dev/null || true
  else kill -TERM "$pid" 2>/dev/null || true; fi
  for ((i = 0; i < STACK_STOP_TIMEOUT * 4; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.25
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "$name did not stop within ${STACK_STOP_TIMEOUT}s; killing it (pid $pid)" >&2
    if [[ "$pgid" == "$pid" ]]; then kill -KILL -- "-$pid" 2>/dev/null || true
    else kill -KILL "$pid" 2>/dev/null || true; fi
    for ((i = 0; i < 40; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  fi
  # Anything left in the group (children of the service) goes too.
  if [[ "$pgid" == "$pid" ]] && pgrep -g "$pid" >/dev/null 2>&1; then
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$(pid_file "$name")"
}

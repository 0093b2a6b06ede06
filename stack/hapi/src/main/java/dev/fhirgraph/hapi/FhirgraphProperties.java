package dev.fhirgraph.hapi;

import java.nio.file.Path;
import java.time.Duration;
import java.util.LinkedHashMap;
import java.util.Map;
import org.springframework.boot.context.properties.ConfigurationProperties;

/**
 * Settings under the {@code fhirgraph.} prefix, given on the command line as
 * {@code --fhirgraph.data-dir=/abs/path} etc. Defaults are in application.properties too.
 */
@ConfigurationProperties(prefix = "fhirgraph")
public class FhirgraphProperties {

	/** Directory holding the H2 database (required). Created if missing. */
	private String dataDir;

	/**
	 * The database: {@code h2} (the default: an H2 file database in {@code fhirgraph.data-dir})
	 * or {@code postgres} (PostgreSQL at {@code fhirgraph.db-url}, with HAPI's PostgreSQL dialect).
	 */
	private String db = "h2";

	/** With {@code fhirgraph.db=postgres}: the JDBC URL, e.g. {@code jdbc:postgresql://127.0.0.1:5433/source}. */
	private String dbUrl;

	/** With {@code fhirgraph.db=postgres}: the database user. */
	private String dbUser;

	/**
	 * With {@code fhirgraph.db=postgres}: the user's password (better from the environment,
	 * {@code FHIRGRAPH_DBPASSWORD}, than on the command line).
	 */
	private String dbPassword;

	/**
	 * Reject writes and deletes that would leave references to missing local resources
	 * (HAPI's enforce-referential-integrity-on-write/-on-delete).
	 */
	private boolean referentialIntegrity = true;

	/**
	 * Validate every request body (create, update, transaction and batch Bundles, ...) against
	 * the FHIR R4 core definitions before it is processed, as production servers often do, and
	 * refuse requests with validation errors (422 + OperationOutcome). HAPI's
	 * RequestValidatingInterceptor with the JPA server's instance validator (R4 core
	 * StructureDefinitions, ValueSets and CodeSystems from hapi-fhir-validation-resources-r4).
	 */
	private boolean validateRequests = false;

	/**
	 * Offer FHIR Bulk Data export: {@code $export} at system, {@code Patient} and
	 * {@code Group/<id>} level, {@code $export-poll-status}, output files as Binary resources.
	 * Off: those operations are not registered (400 + OperationOutcome "does not know how to
	 * handle GET operation[$export]", and the CapabilityStatement does not list them), as on a
	 * server without bulk export, so that a client's fallback to plain searches can be tried.
	 */
	private boolean bulkExport = true;

	/**
	 * How often HAPI's batch2 maintenance pass runs (HAPI's default: once a minute). Batch2 jobs
	 * (bulk export, delete-expunge, reindex) start, move from one step to the next and finish
	 * only in that pass, so a small {@code $export} takes about three passes: ~3 s here instead
	 * of ~3 minutes. A pass is one query over the job instances.
	 */
	private Duration batchMaintenanceInterval = Duration.ofSeconds(1);

	/** Maximum number of entries in a transaction Bundle; 0 means unlimited. */
	private int maxTransactionSize = 0;

	/** Largest page size a client may ask for with {@code _count}. */
	private int maxPageSize = 2000;

	/** Page size used when a search has no {@code _count}. */
	private int defaultPageSize = 20;

	/** Maximum JDBC connections to the database (H2 or PostgreSQL). */
	private int maxDbConnections = 10;

	/**
	 * HAPI's check that each reference points to a resource type the element allows (HAPI
	 * default: on). Known HAPI 8.8.0 issue: with it on, a transaction entry that references its
	 * own urn:uuid fails with 500 (StackOverflowError); with it off such an entry is stored with
	 * a contained copy of itself instead. Left on.
	 */
	private boolean enforceReferenceTargetTypes = true;

	/** Extra or overriding Hibernate properties, e.g. {@code --fhirgraph.jpa[hibernate.show_sql]=true}. */
	private Map<String, String> jpa = new LinkedHashMap<>();

	/**
	 * Protected mode: with {@code fhirgraph.oauth2.issuer-uri} set, every request but
	 * {@code /fhir/metadata} and {@code /fhir/.well-known/smart-configuration} needs an OAuth2
	 * bearer token (a JWT from that issuer) carrying SMART Backend Services scopes. See
	 * {@link OAuth2SecurityConfig}.
	 */
	private final OAuth2 oauth2 = new OAuth2();

	/** Settings under {@code fhirgraph.oauth2.}. */
	public static class OAuth2 {

		/**
		 * The authorization server's issuer, exactly as in the tokens' {@code iss} claim (e.g.
		 * {@code http://127.0.0.1:8180/realms/fhirgraph}). Unset (the default): the server is open.
		 */
		private String issuerUri;

		/**
		 * Where the issuer's signing keys (JWKS) are fetched from. Default: the {@code jwks_uri}
		 * of the issuer's OpenID discovery document, looked up at the first request with a token.
		 * Set it when the server reaches the issuer at another address than clients do.
		 */
		private String jwkSetUri;

		/**
		 * The token endpoint that {@code .well-known/smart-configuration} and the
		 * CapabilityStatement name. Default: the {@code token_endpoint} of the issuer's OpenID
		 * discovery document.
		 */
		private String tokenEndpoint;

		/** Leeway when checking a token's {@code exp} and {@code nbf}. */
		private Duration clockSkew = Duration.ofSeconds(5);

		public boolean isEnabled() {
			return issuerUri != null && !issuerUri.isBlank();
		}

		public String getIssuerUri() {
			return issuerUri;
		}

		public void setIssuerUri(String issuerUri) {
			this.issuerUri = issuerUri;
		}

		public String getJwkSetUri() {
			return jwkSetUri;
		}

		public void setJwkSetUri(String jwkSetUri) {
			this.jwkSetUri = jwkSetUri;
		}

		public String getTokenEndpoint() {
			return tokenEndpoint;
		}

		public void setTokenEndpoint(String tokenEndpoint) {
			this.tokenEndpoint = tokenEndpoint;
		}

		public Duration getClockSkew() {
			return clockSkew;
		}

		public void setClockSkew(Duration clockSkew) {
			this.clockSkew = clockSkew;
		}
	}

	public Path resolvedDataDir() {
		if (dataDir == null || dataDir.isBlank()) {
			throw new IllegalStateException(
					"fhirgraph.data-dir is required, e.g. --fhirgraph.data-dir=/abs/path/to/data");
		}
		return Path.of(dataDir).toAbsolutePath().normalize();
	}

	public String getDataDir() {
		return dataDir;
	}

	public void setDataDir(String dataDir) {
		this.dataDir = dataDir;
	}

	public boolean isPostgres() {
		String value = db == null ? "h2" : db.trim().toLowerCase(java.util.Locale.ROOT);
		switch (value) {
			case "h2":
			case "":
				return false;
			case "postgres":
			case "postgresql":
				return true;
			default:
				throw new IllegalStateException("fhirgraph.db must be h2 or postgres, not '" + db + "'");
		}
	}

	public String getDb() {
		return db;
	}

	public void setDb(String db) {
		this.db = db;
	}

	public String getDbUrl() {
		return dbUrl;
	}

	public void setDbUrl(String dbUrl) {
		this.dbUrl = dbUrl;
	}

	public String getDbUser() {
		return dbUser;
	}

	public void setDbUser(String dbUser) {
		this.dbUser = dbUser;
	}

	public String getDbPassword() {
		return dbPassword;
	}

	public void setDbPassword(String dbPassword) {
		this.dbPassword = dbPassword;
	}

	public boolean isReferentialIntegrity() {
		return referentialIntegrity;
	}

	public void setReferentialIntegrity(boolean referentialIntegrity) {
		this.referentialIntegrity = referentialIntegrity;
	}

	public boolean isValidateRequests() {
		return validateRequests;
	}

	public void setValidateRequests(boolean validateRequests) {
		this.validateRequests = validateRequests;
	}

	public boolean isBulkExport() {
		return bulkExport;
	}

	public void setBulkExport(boolean bulkExport) {
		this.bulkExport = bulkExport;
	}

	public Duration getBatchMaintenanceInterval() {
		return batchMaintenanceInterval;
	}

	public void setBatchMaintenanceInterval(Duration batchMaintenanceInterval) {
		this.batchMaintenanceInterval = batchMaintenanceInterval;
	}

	public int getMaxTransactionSize() {
		return maxTransactionSize;
	}

	public void setMaxTransactionSize(int maxTransactionSize) {
		this.maxTransactionSize = maxTransactionSize;
	}

	public int getMaxPageSize() {
		return maxPageSize;
	}

	public void setMaxPageSize(int maxPageSize) {
		this.maxPageSize = maxPageSize;
	}

	public int getDefaultPageSize() {
		return defaultPageSize;
	}

	public void setDefaultPageSize(int defaultPageSize) {
		this.defaultPageSize = defaultPageSize;
	}

	public int getMaxDbConnections() {
		return maxDbConnections;
	}

	public void setMaxDbConnections(int maxDbConnections) {
		this.maxDbConnections = maxDbConnections;
	}

	public boolean isEnforceReferenceTargetTypes() {
		return enforceReferenceTargetTypes;
	}

	public void setEnforceReferenceTargetTypes(boolean enforceReferenceTargetTypes) {
		this.enforceReferenceTargetTypes = enforceReferenceTargetTypes;
	}

	public OAuth2 getOauth2() {
		return oauth2;
	}

	public Map<String, String> getJpa() {
		return jpa;
	}

	public void setJpa(Map<String, String> jpa) {
		this.jpa = jpa;
	}
}

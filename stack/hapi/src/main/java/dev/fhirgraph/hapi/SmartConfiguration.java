package dev.fhirgraph.hapi;

import ca.uhn.fhir.interceptor.api.Hook;
import ca.uhn.fhir.interceptor.api.Interceptor;
import ca.uhn.fhir.interceptor.api.Pointcut;
import com.nimbusds.jose.util.JSONObjectUtils;
import jakarta.servlet.http.HttpServlet;
import jakarta.servlet.http.HttpServletRequest;
import jakarta.servlet.http.HttpServletResponse;
import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.hl7.fhir.instance.model.api.IBaseConformance;
import org.hl7.fhir.r4.model.CapabilityStatement;
import org.hl7.fhir.r4.model.CodeableConcept;
import org.hl7.fhir.r4.model.Extension;
import org.hl7.fhir.r4.model.UriType;

/**
 * What a protected server tells clients about its authorization server: the SMART App Launch
 * 2.x discovery document ({@code GET /fhir/.well-known/smart-configuration}) for SMART Backend
 * Services (client credentials, {@code private_key_jwt}), and the matching
 * {@code rest.security} element of the CapabilityStatement.
 */
public class SmartConfiguration {

	public static final String PATH = "/fhir/.well-known/smart-configuration";
	public static final String READ_SCOPE = "system/*.read";
	public static final String WRITE_SCOPE = "system/*.write";

	private final FhirgraphProperties.OAuth2 settings;
	private volatile String discoveredTokenEndpoint;

	public SmartConfiguration(FhirgraphProperties.OAuth2 theSettings) {
		settings = theSettings;
	}

	public String issuer() {
		return settings.getIssuerUri();
	}

	/** The configured token endpoint, else the issuer's discovery document's (looked up once). */
	public String tokenEndpoint() throws IOException {
		if (settings.getTokenEndpoint() != null && !settings.getTokenEndpoint().isBlank()) {
			return settings.getTokenEndpoint();
		}
		String endpoint = discoveredTokenEndpoint;
		if (endpoint == null) {
			endpoint = discover("token_endpoint");
			discoveredTokenEndpoint = endpoint;
		}
		return endpoint;
	}

	private String discover(String theKey) throws IOException {
		String issuer = issuer().replaceAll("/+$", "");
		URI uri = URI.create(issuer + "/.well-known/openid-configuration");
		try {
			HttpClient client = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5)).build();
			HttpResponse<String> response = client.send(
					HttpRequest.newBuilder(uri).timeout(Duration.ofSeconds(10)).build(),
					HttpResponse.BodyHandlers.ofString());
			if (response.statusCode() != 200) {
				throw new IOException("GET " + uri + " answered " + response.statusCode());
			}
			Object value = JSONObjectUtils.parse(response.body()).get(theKey);
			if (!(value instanceof String text) || text.isBlank()) {
				throw new IOException(uri + " has no " + theKey);
			}
			return text;
		} catch (InterruptedException e) {
			Thread.currentThread().interrupt();
			throw new IOException("interrupted while reading " + uri, e);
		} catch (java.text.ParseException e) {
			throw new IOException(uri + " is not JSON: " + e.getMessage(), e);
		}
	}

	/** The {@code .well-known/smart-configuration} document. */
	public Map<String, Object> document() throws IOException {
		Map<String, Object> doc = new LinkedHashMap<>();
		doc.put("issuer", issuer());
		doc.put("token_endpoint", tokenEndpoint());
		doc.put("grant_types_supported", List.of("client_credentials"));
		doc.put(
				"token_endpoint_auth_methods_supported",
				List.of("private_key_jwt", "client_secret_basic", "client_secret_post"));
		doc.put("token_endpoint_auth_signing_alg_values_supported", List.of("RS384", "ES384"));
		doc.put("scopes_supported", List.of(READ_SCOPE, WRITE_SCOPE));
		doc.put(
				"capabilities",
				List.of("client-confidential-asymmetric", "client-confidential-symmetric", "permission-v1"));
		return doc;
	}

	/** Serves {@link #document()} as JSON; mapped to {@link #PATH} (an exact servlet mapping wins over /fhir/*). */
	public static class Servlet extends HttpServlet {

		private final transient SmartConfiguration configuration;

		public Servlet(SmartConfiguration theConfiguration) {
			configuration = theConfiguration;
		}

		@Override
		protected void doGet(HttpServletRequest theRequest, HttpServletResponse theResponse) throws IOException {
			String body;
			try {
				body = JSONObjectUtils.toJSONString(configuration.document());
			} catch (IOException e) {
				theResponse.sendError(HttpServletResponse.SC_SERVICE_UNAVAILABLE, e.getMessage());
				return;
			}
			theResponse.setStatus(HttpServletResponse.SC_OK);
			theResponse.setContentType("application/json");
			theResponse.setCharacterEncoding(StandardCharsets.UTF_8.name());
			theResponse.getWriter().write(body);
		}
	}

	/**
	 * Declares the security in the CapabilityStatement: service SMART-on-FHIR and the token
	 * endpoint in the {@code oauth-uris} extension (how SMART clients discovered it before
	 * {@code .well-known/smart-configuration}).
	 */
	@Interceptor
	public static class CapabilityStatementInterceptor {

		private final SmartConfiguration configuration;

		public CapabilityStatementInterceptor(SmartConfiguration theConfiguration) {
			configuration = theConfiguration;
		}

		@Hook(Pointcut.SERVER_CAPABILITY_STATEMENT_GENERATED)
		public void addSecurity(IBaseConformance theCapabilityStatement) {
			if (!(theCapabilityStatement instanceof CapabilityStatement statement)) {
				return;
			}
			String token;
			try {
				token = configuration.tokenEndpoint();
			} catch (IOException e) {
				token = null;
			}
			for (CapabilityStatement.CapabilityStatementRestComponent rest : statement.getRest()) {
				CapabilityStatement.CapabilityStatementRestSecurityComponent security = rest.getSecurity();
				security.getService().clear();
				CodeableConcept service = security.addService();
				service.addCoding()
						.setSystem("http://terminology.hl7.org/CodeSystem/restful-security-service")
						.setCode("SMART-on-FHIR");
				security.setDescription("OAuth2 bearer tokens from " + configuration.issuer()
						+ " (SMART Backend Services: client credentials; scopes " + READ_SCOPE + ", "
						+ WRITE_SCOPE + "); see .well-known/smart-configuration");
				if (token != null) {
					Extension uris = security.addExtension()
							.setUrl("http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris");
					uris.addExtension("token", new UriType(token));
				}
			}
		}
	}
}

package dev.fhirgraph.hapi;

import ca.uhn.fhir.context.FhirContext;
import jakarta.servlet.http.HttpServletRequest;
import jakarta.servlet.http.HttpServletResponse;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.Set;
import java.util.function.Supplier;
import java.util.stream.Collectors;
import org.hl7.fhir.r4.model.OperationOutcome;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.boot.autoconfigure.condition.ConditionalOnProperty;
import org.springframework.boot.web.servlet.DelegatingFilterProxyRegistrationBean;
import org.springframework.boot.web.servlet.ServletRegistrationBean;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.security.authentication.AnonymousAuthenticationToken;
import org.springframework.security.authorization.AuthorizationDecision;
import org.springframework.security.authorization.AuthorizationManager;
import org.springframework.security.authorization.AuthorizationResult;
import org.springframework.security.config.annotation.web.builders.HttpSecurity;
import org.springframework.security.config.annotation.web.configuration.EnableWebSecurity;
import org.springframework.security.config.annotation.web.configurers.AbstractHttpConfigurer;
import org.springframework.security.config.http.SessionCreationPolicy;
import org.springframework.security.core.Authentication;
import org.springframework.security.core.AuthenticationException;
import org.springframework.security.core.GrantedAuthority;
import org.springframework.security.oauth2.core.DelegatingOAuth2TokenValidator;
import org.springframework.security.oauth2.core.OAuth2AuthenticationException;
import org.springframework.security.oauth2.jose.jws.SignatureAlgorithm;
import org.springframework.security.oauth2.jwt.Jwt;
import org.springframework.security.oauth2.jwt.JwtDecoder;
import org.springframework.security.oauth2.jwt.JwtIssuerValidator;
import org.springframework.security.oauth2.jwt.JwtTimestampValidator;
import org.springframework.security.oauth2.jwt.NimbusJwtDecoder;
import org.springframework.security.oauth2.server.resource.web.BearerTokenAuthenticationEntryPoint;
import org.springframework.security.web.AuthenticationEntryPoint;
import org.springframework.security.web.SecurityFilterChain;
import org.springframework.security.web.access.AccessDeniedHandler;
import org.springframework.security.web.access.intercept.RequestAuthorizationContext;

/**
 * Protected mode, on only when {@code fhirgraph.oauth2.issuer-uri} is set: the server is an
 * OAuth2 resource server for SMART Backend Services clients.
 *
 * <ul>
 *   <li>{@code GET /fhir/metadata} and {@code GET /fhir/.well-known/smart-configuration} are open.
 *   <li>Everything else needs {@code Authorization: Bearer <JWT>}: signed by a key in the
 *       issuer's JWKS, {@code iss} equal to the issuer, not expired (a few seconds' leeway,
 *       {@code fhirgraph.oauth2.clock-skew}). Without a valid token: 401 with
 *       {@code WWW-Authenticate: Bearer ...}.
 *   <li>Reads (GET, HEAD, POST {@code .../_search}, and DELETE {@code /fhir/$export-poll-status},
 *       which cancels a bulk export that a reader may start) need scope {@code system/*.read} or
 *       {@code system/*.write} in the token's {@code scope} claim; everything else (create,
 *       update, patch, delete, transaction and batch Bundles, operations by POST) needs
 *       {@code system/*.write}. Otherwise: 403 with {@code error="insufficient_scope"}.
 * </ul>
 *
 * Both error answers carry a FHIR OperationOutcome. Without the property none of this exists:
 * no Spring Security filter is registered at all.
 */
@Configuration
@ConditionalOnProperty(prefix = "fhirgraph.oauth2", name = "issuer-uri")
@EnableWebSecurity
public class OAuth2SecurityConfig {

	private static final Logger ourLog = LoggerFactory.getLogger(OAuth2SecurityConfig.class);

	/** Request attribute: the scope the request needed (for the 403 answer). */
	static final String REQUIRED_SCOPE = OAuth2SecurityConfig.class.getName() + ".requiredScope";

	static final String REALM = "fhirgraph";

	@Bean
	public SmartConfiguration smartConfiguration(FhirgraphProperties theProperties) {
		return new SmartConfiguration(theProperties.getOauth2());
	}

	@Bean
	public ServletRegistrationBean<SmartConfiguration.Servlet> smartConfigurationServlet(
			SmartConfiguration theConfiguration) {
		ServletRegistrationBean<SmartConfiguration.Servlet> registration =
				new ServletRegistrationBean<>(new SmartConfiguration.Servlet(theConfiguration), SmartConfiguration.PATH);
		registration.setName("smart-configuration");
		return registration;
	}

	@Bean
	public JwtDecoder jwtDecoder(FhirgraphProperties theProperties) {
		FhirgraphProperties.OAuth2 settings = theProperties.getOauth2();
		NimbusJwtDecoder decoder;
		if (settings.getJwkSetUri() != null && !settings.getJwkSetUri().isBlank()) {
			decoder = NimbusJwtDecoder.withJwkSetUri(settings.getJwkSetUri())
					.jwsAlgorithms(algorithms -> algorithms.addAll(Set.of(SignatureAlgorithm.values())))
					.build();
		} else {
			// Looks up jwks_uri in the issuer's discovery document at the first token.
			decoder = NimbusJwtDecoder.withIssuerLocation(settings.getIssuerUri()).build();
		}
		decoder.setJwtValidator(new DelegatingOAuth2TokenValidator<Jwt>(
				new JwtTimestampValidator(settings.getClockSkew()), new JwtIssuerValidator(settings.getIssuerUri())));
		ourLog.info(
				"Protected mode: bearer tokens from issuer {} (keys from {}) with SMART scopes {} / {}",
				settings.getIssuerUri(),
				settings.getJwkSetUri() != null ? settings.getJwkSetUri() : "its discovery document",
				SmartConfiguration.READ_SCOPE,
				SmartConfiguration.WRITE_SCOPE);
		return decoder;
	}

	@Bean
	public SecurityFilterChain fhirSecurityFilterChain(HttpSecurity theHttp, JwtDecoder theDecoder, FhirContext theContext)
			throws Exception {
		AuthenticationEntryPoint unauthorized = new OperationOutcomeEntryPoint(theContext);
		AccessDeniedHandler forbidden = new OperationOutcomeAccessDeniedHandler(theContext);
		theHttp.csrf(AbstractHttpConfigurer::disable)
				// Answers as an open server would, apart from authorization (no added cache/frame headers).
				.headers(AbstractHttpConfigurer::disable)
				.requestCache(AbstractHttpConfigurer::disable)
				.logout(AbstractHttpConfigurer::disable)
				.sessionManagement(session -> session.sessionCreationPolicy(SessionCreationPolicy.STATELESS))
				.authorizeHttpRequests(requests -> requests.anyRequest().access(new SmartScopeAuthorizationManager()))
				.oauth2ResourceServer(server -> server.jwt(jwt -> jwt.decoder(theDecoder))
						.authenticationEntryPoint(unauthorized)
						.accessDeniedHandler(forbidden))
				.exceptionHandling(exceptions ->
						exceptions.authenticationEntryPoint(unauthorized).accessDeniedHandler(forbidden));
		return theHttp.build();
	}

	/** Runs the security filter chain before the FHIR servlet (as Spring Boot's security auto-configuration would). */
	@Bean
	public DelegatingFilterProxyRegistrationBean securityFilterChainRegistration() {
		DelegatingFilterProxyRegistrationBean registration =
				new DelegatingFilterProxyRegistrationBean("springSecurityFilterChain");
		registration.setOrder(-100);
		return registration;
	}

	/** Decides by HTTP method, path and the token's SMART scopes. */
	static final class SmartScopeAuthorizationManager implements AuthorizationManager<RequestAuthorizationContext> {

		private static final Set<String> OPEN_PATHS = Set.of("/fhir/metadata", SmartConfiguration.PATH);

		/** The bulk export status URL, whose DELETE cancels the export: as a reader may start one. */
		private static final Set<String> EXPORT_STATUS_PATHS =
				Set.of("/fhir/$export-poll-status", "/fhir/%24export-poll-status");

		@Override
		public AuthorizationResult authorize(
				Supplier<Authentication> theAuthentication, RequestAuthorizationContext theContext) {
			return decide(theAuthentication, theContext.getRequest());
		}

		@Override
		@Deprecated
		public AuthorizationDecision check(
				Supplier<Authentication> theAuthentication, RequestAuthorizationContext theContext) {
			return decide(theAuthentication, theContext.getRequest());
		}

		private static AuthorizationDecision decide(Supplier<Authentication> theAuthentication, HttpServletRequest theRequest) {
			String path = theRequest.getRequestURI().substring(theRequest.getContextPath().length());
			String method = theRequest.getMethod();
			boolean read = "GET".equals(method) || "HEAD".equals(method) || "OPTIONS".equals(method);
			if (read && OPEN_PATHS.contains(path)) {
				return new AuthorizationDecision(true);
			}
			Authentication authentication = theAuthentication.get();
			if (authentication == null
					|| !authentication.isAuthenticated()
					|| authentication instanceof AnonymousAuthenticationToken) {
				return new AuthorizationDecision(false);
			}
			Set<String> scopes = authentication.getAuthorities().stream()
					.map(GrantedAuthority::getAuthority)
					.filter(authority -> authority.startsWith("SCOPE_"))
					.map(authority -> authority.substring("SCOPE_".length()))
					.collect(Collectors.toSet());
			if (read
					|| ("POST".equals(method) && path.endsWith("/_search"))
					|| ("DELETE".equals(method) && EXPORT_STATUS_PATHS.contains(path))) {
				theRequest.setAttribute(REQUIRED_SCOPE, SmartConfiguration.READ_SCOPE);
				return new AuthorizationDecision(
						scopes.contains(SmartConfiguration.READ_SCOPE) || scopes.contains(SmartConfiguration.WRITE_SCOPE));
			}
			theRequest.setAttribute(REQUIRED_SCOPE, SmartConfiguration.WRITE_SCOPE);
			return new AuthorizationDecision(scopes.contains(SmartConfiguration.WRITE_SCOPE));
		}
	}

	/** 401: Spring's {@code WWW-Authenticate: Bearer ...} header, and an OperationOutcome. */
	static final class OperationOutcomeEntryPoint implements AuthenticationEntryPoint {

		private final BearerTokenAuthenticationEntryPoint delegate = new BearerTokenAuthenticationEntryPoint();
		private final FhirContext context;

		OperationOutcomeEntryPoint(FhirContext theContext) {
			context = theContext;
			delegate.setRealmName(REALM);
		}

		@Override
		public void commence(
				HttpServletRequest theRequest, HttpServletResponse theResponse, AuthenticationException theException)
				throws IOException {
			delegate.commence(theRequest, theResponse, theException);
			String message;
			if (theException instanceof OAuth2AuthenticationException oauth
					&& oauth.getError().getDescription() != null) {
				message = "Invalid bearer token: " + oauth.getError().getDescription();
			} else {
				message = "This server needs an OAuth2 bearer token (SMART Backend Services); "
						+ "see .well-known/smart-configuration for the token endpoint";
			}
			writeOutcome(context, theResponse, OperationOutcome.IssueType.LOGIN, message);
		}
	}

	/** 403: {@code WWW-Authenticate: Bearer error="insufficient_scope", scope="..."}, and an OperationOutcome. */
	static final class OperationOutcomeAccessDeniedHandler implements AccessDeniedHandler {

		private final FhirContext context;

		OperationOutcomeAccessDeniedHandler(FhirContext theContext) {
			context = theContext;
		}

		@Override
		public void handle(
				HttpServletRequest theRequest,
				HttpServletResponse theResponse,
				org.springframework.security.access.AccessDeniedException theException)
				throws IOException {
			Object scope = theRequest.getAttribute(REQUIRED_SCOPE);
			String needed = scope != null ? scope.toString() : SmartConfiguration.WRITE_SCOPE;
			theResponse.setStatus(HttpServletResponse.SC_FORBIDDEN);
			theResponse.setHeader(
					"WWW-Authenticate",
					"Bearer realm=\"" + REALM + "\", error=\"insufficient_scope\", error_description=\""
							+ "The request requires scope " + needed + "\", scope=\"" + needed + "\"");
			writeOutcome(
					context,
					theResponse,
					OperationOutcome.IssueType.FORBIDDEN,
					theRequest.getMethod() + " needs an access token with scope " + needed
							+ (needed.equals(SmartConfiguration.READ_SCOPE) ? " (or " + SmartConfiguration.WRITE_SCOPE + ")" : ""));
		}
	}

	static void writeOutcome(
			FhirContext theContext, HttpServletResponse theResponse, OperationOutcome.IssueType theType, String theMessage)
			throws IOException {
		OperationOutcome outcome = new OperationOutcome();
		outcome.addIssue()
				.setSeverity(OperationOutcome.IssueSeverity.ERROR)
				.setCode(theType)
				.setDiagnostics(theMessage);
		theResponse.setContentType("application/fhir+json");
		theResponse.setCharacterEncoding(StandardCharsets.UTF_8.name());
		theResponse.getWriter().write(theContext.newJsonParser().encodeResourceToString(outcome));
	}
}

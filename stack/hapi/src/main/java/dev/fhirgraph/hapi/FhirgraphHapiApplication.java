package dev.fhirgraph.hapi;

import org.springframework.boot.SpringApplication;
import org.springframework.boot.SpringBootConfiguration;
import org.springframework.boot.autoconfigure.ImportAutoConfiguration;
import org.springframework.boot.autoconfigure.context.PropertyPlaceholderAutoConfiguration;
import org.springframework.boot.autoconfigure.web.servlet.HttpEncodingAutoConfiguration;
import org.springframework.boot.autoconfigure.web.servlet.ServletWebServerFactoryAutoConfiguration;
import org.springframework.boot.context.event.ApplicationEnvironmentPreparedEvent;
import org.springframework.boot.context.properties.EnableConfigurationProperties;
import org.springframework.context.ApplicationListener;
import org.springframework.context.annotation.Import;

/**
 * fhirgraph's HAPI FHIR JPA server: FHIR R4 at {@code /fhir}, stored in an H2 file database
 * under {@code fhirgraph.data-dir}.
 *
 * <p>Spring Boot auto-configuration is deliberately <em>not</em> enabled wholesale: HAPI drags
 * in many libraries (springdoc, thymeleaf, quartz, elasticsearch, ...) whose Boot
 * auto-configurations would cost startup time and memory. Only the embedded web server and
 * property handling are imported; everything HAPI needs is wired explicitly in
 * {@link JpaServerConfig} and {@link FhirServletConfig}; {@link OAuth2SecurityConfig} only in
 * protected mode ({@code fhirgraph.oauth2.issuer-uri} set).
 */
@SpringBootConfiguration
@ImportAutoConfiguration({
	PropertyPlaceholderAutoConfiguration.class,
	ServletWebServerFactoryAutoConfiguration.class,
	HttpEncodingAutoConfiguration.class
})
@EnableConfigurationProperties(FhirgraphProperties.class)
@Import({JpaServerConfig.class, FhirServletConfig.class, OAuth2SecurityConfig.class})
public class FhirgraphHapiApplication {

	public static void main(String[] args) {
		SpringApplication application = new SpringApplication(FhirgraphHapiApplication.class);
		// Fail at once, with a clear message, if the one required setting is missing.
		application.addListeners((ApplicationListener<ApplicationEnvironmentPreparedEvent>) theEvent -> {
			String dataDir = theEvent.getEnvironment().getProperty("fhirgraph.data-dir");
			if (dataDir == null || dataDir.isBlank()) {
				throw new IllegalStateException(
						"fhirgraph.data-dir is required, e.g. --fhirgraph.data-dir=/abs/path/to/data");
			}
		});
		application.run(args);
	}
}

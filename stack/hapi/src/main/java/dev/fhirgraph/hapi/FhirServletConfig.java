package dev.fhirgraph.hapi;

import ca.uhn.fhir.batch2.jobs.export.BulkDataExportProvider;
import ca.uhn.fhir.batch2.jobs.expunge.DeleteExpungeProvider;
import ca.uhn.fhir.context.support.IValidationSupport;
import ca.uhn.fhir.jpa.api.config.JpaStorageSettings;
import ca.uhn.fhir.jpa.api.dao.IFhirSystemDao;
import ca.uhn.fhir.jpa.provider.IJpaSystemProvider;
import ca.uhn.fhir.jpa.provider.JpaCapabilityStatementProvider;
import ca.uhn.fhir.jpa.search.DatabaseBackedPagingProvider;
import ca.uhn.fhir.rest.api.EncodingEnum;
import ca.uhn.fhir.rest.server.IncomingRequestAddressStrategy;
import ca.uhn.fhir.rest.server.RestfulServer;
import ca.uhn.fhir.rest.server.interceptor.RequestValidatingInterceptor;
import ca.uhn.fhir.rest.server.provider.ResourceProviderFactory;
import ca.uhn.fhir.rest.server.util.ISearchParamRegistry;
import ca.uhn.fhir.validation.IInstanceValidatorModule;
import ca.uhn.fhir.validation.IValidatorModule;
import ca.uhn.fhir.validation.ResultSeverityEnum;
import java.util.List;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.beans.factory.ObjectProvider;
import org.springframework.boot.web.servlet.ServletRegistrationBean;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;

/** The FHIR REST endpoint: a HAPI {@link RestfulServer} servlet mounted at {@code /fhir/*}. */
@Configuration
public class FhirServletConfig {

	public static final String FHIR_PATH = "/fhir/*";

	/**
	 * Appended to the CapabilityStatement's implementation description when requests are
	 * validated, so that a client (and stack/status) can tell a validating server apart.
	 */
	public static final String VALIDATING_MARKER = "(validates requests)";

	private static final Logger ourLog = LoggerFactory.getLogger(FhirServletConfig.class);

	@Bean
	public RestfulServer fhirRestfulServer(
			IFhirSystemDao<?, ?> theSystemDao,
			IJpaSystemProvider theSystemProvider,
			ResourceProviderFactory theResourceProviders,
			JpaStorageSettings theStorageSettings,
			ISearchParamRegistry theSearchParamRegistry,
			IValidationSupport theValidationSupport,
			DatabaseBackedPagingProvider thePagingProvider,
			DeleteExpungeProvider theDeleteExpungeProvider,
			ObjectProvider<BulkDataExportProvider> theBulkDataExportProvider,
			ObjectProvider<IInstanceValidatorModule> theInstanceValidator,
			ObjectProvider<SmartConfiguration> theSmartConfiguration,
			FhirgraphProperties theProperties) {
		RestfulServer server = new RestfulServer(theSystemDao.getContext());

		// One provider per resource type (CRUD, search, history, $expunge per type/instance)
		server.registerProviders(theResourceProviders.createProviders());
		// System level: transaction/batch, history, $expunge (everything), $get-resource-counts ...
		server.registerProvider(theSystemProvider);
		// $delete-expunge
		server.registerProvider(theDeleteExpungeProvider);
		if (theProperties.isBulkExport()) {
			// FHIR Bulk Data export: $export (system, Patient, Group/<id>; Prefer: respond-async
			// required) answers 202 + Content-Location .../$export-poll-status?_jobId=...; that
			// URL answers 202 (X-Progress, Retry-After) while the batch2 job runs, then 200 with
			// the manifest, whose output URLs are Binary resources on this server's base
			// (NDJSON when fetched without a FHIR Accept header). DELETE on it cancels.
			server.registerProvider(theBulkDataExportProvider.getObject());
		} else {
			ourLog.info("Bulk export is off (fhirgraph.bulk-export=false): no $export operations");
		}

		JpaCapabilityStatementProvider capabilities = new JpaCapabilityStatementProvider(
				server, theSystemDao, theStorageSettings, theSearchParamRegistry, theValidationSupport);
		String description = "fhirgraph HAPI FHIR R4 server";

		if (theProperties.isValidateRequests()) {
			// As the hapiproject/hapi image does with hapi.fhir.validation.requests_enabled=true:
			// the JPA server's FhirInstanceValidator (R4 core definitions, its terminology and the
			// profiles stored on the server) checks each request body; errors refuse the request
			// with 422 Unprocessable Entity and the validator's OperationOutcome. Warnings and
			// information pass.
			RequestValidatingInterceptor validating = new RequestValidatingInterceptor();
			validating.setValidatorModules(List.<IValidatorModule>of(theInstanceValidator.getObject()));
			// HAPI 8.8.0's default already, spelled out; no X-FHIR-Request-Validation headers
			// (also the default: a Bundle's warnings would make them huge).
			validating.setFailOnSeverity(ResultSeverityEnum.ERROR);
			server.registerInterceptor(validating);
			description += " " + VALIDATING_MARKER;
			ourLog.info("Request validation is on: request bodies with validation errors are refused (422)");
		}

		SmartConfiguration smart = theSmartConfiguration.getIfAvailable();
		if (smart != null) {
			// Protected mode (OAuth2SecurityConfig): the CapabilityStatement names the token endpoint.
			server.registerInterceptor(new SmartConfiguration.CapabilityStatementInterceptor(smart));
		}

		capabilities.setImplementationDescription(description);
		server.setServerConformanceProvider(capabilities);

		thePagingProvider.setDefaultPageSize(theProperties.getDefaultPageSize());
		thePagingProvider.setMaximumPageSize(theProperties.getMaxPageSize());
		server.setPagingProvider(thePagingProvider);

		server.setDefaultResponseEncoding(EncodingEnum.JSON);
		server.setDefaultPrettyPrint(false);
		// Base URL in Location headers and paging links = the address the client used.
		server.setServerAddressStrategy(new IncomingRequestAddressStrategy());
		return server;
	}

	@Bean
	public ServletRegistrationBean<RestfulServer> fhirServletRegistration(RestfulServer theServer) {
		ServletRegistrationBean<RestfulServer> registration = new ServletRegistrationBean<>(theServer, FHIR_PATH);
		registration.setName("fhir");
		// Initialise HAPI (scan providers, build the CapabilityStatement) during startup
		// rather than on the first request.
		registration.setLoadOnStartup(1);
		return registration;
	}
}

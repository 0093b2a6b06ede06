package dev.fhirgraph.hapi;

import ca.uhn.fhir.batch2.api.IJobMaintenanceService;
import ca.uhn.fhir.batch2.jobs.config.BatchCommonCtx;
import ca.uhn.fhir.batch2.jobs.expunge.DeleteExpungeAppCtx;
import ca.uhn.fhir.batch2.jobs.export.BulkExportAppCtx;
import ca.uhn.fhir.batch2.jobs.reindex.ReindexAppCtx;
import ca.uhn.fhir.batch2.jobs.termcodesystem.TermCodeSystemJobConfig;
import ca.uhn.fhir.batch2.maintenance.JobMaintenanceServiceImpl;
import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.jpa.api.config.JpaStorageSettings;
import ca.uhn.fhir.jpa.api.config.ThreadPoolFactoryConfig;
import ca.uhn.fhir.jpa.batch2.JpaBatch2Config;
import ca.uhn.fhir.jpa.binstore.DatabaseBinaryContentStorageSvcImpl;
import ca.uhn.fhir.jpa.config.HapiJpaConfig;
import ca.uhn.fhir.jpa.config.r4.JpaR4Config;
import ca.uhn.fhir.jpa.config.util.HapiEntityManagerFactoryUtil;
import ca.uhn.fhir.jpa.model.config.PartitionSettings;
import ca.uhn.fhir.jpa.model.config.SubscriptionSettings;
import ca.uhn.fhir.jpa.model.dialect.HapiFhirH2Dialect;
import ca.uhn.fhir.jpa.model.dialect.HapiFhirPostgresDialect;
import ca.uhn.fhir.jpa.subscription.channel.config.SubscriptionChannelConfig;
import com.zaxxer.hikari.HikariConfig;
import com.zaxxer.hikari.HikariDataSource;
import jakarta.persistence.EntityManagerFactory;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Properties;
import javax.sql.DataSource;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.beans.factory.SmartInitializingSingleton;
import org.springframework.beans.factory.config.BeanPostProcessor;
import org.springframework.beans.factory.config.ConfigurableListableBeanFactory;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.context.annotation.Import;
import org.springframework.context.annotation.Primary;
import org.springframework.orm.jpa.JpaTransactionManager;
import org.springframework.orm.jpa.LocalContainerEntityManagerFactoryBean;
import org.springframework.transaction.annotation.EnableTransactionManagement;

/**
 * Storage side of the server: H2 file database (or PostgreSQL, {@code fhirgraph.db=postgres}), Hibernate, and HAPI's JPA/R4 configuration.
 * HAPI's own config classes ({@link JpaR4Config}, {@link HapiJpaConfig}, batch2) define the
 * DAOs and services; this class supplies the beans they expect the host application to provide.
 */
@Configuration
@EnableTransactionManagement
@Import({
	JpaR4Config.class,
	HapiJpaConfig.class,
	ThreadPoolFactoryConfig.class,
	// Batch2 (HAPI's persistent job engine) and the jobs this server runs: delete-expunge
	// ($delete-expunge, DELETE ...?_expunge=true), reindexing after SearchParameter changes,
	// CodeSystem deletion, and bulk export (FHIR Bulk Data $export: the job definitions that
	// write NDJSON files as Binary resources; JpaConfig already brings the JPA export processor
	// and the BulkDataExportProvider bean, which FhirServletConfig registers). Bulk import is
	// left out.
	JpaBatch2Config.class,
	BatchCommonCtx.class,
	DeleteExpungeAppCtx.class,
	ReindexAppCtx.class,
	TermCodeSystemJobConfig.class,
	BulkExportAppCtx.class,
	// In-memory message broker (IBrokerClient) that batch2 uses to hand out work chunks.
	// Despite its name this is not subscription processing: no subscription matcher or
	// delivery module is imported, and SubscriptionSettings enables no channel type.
	SubscriptionChannelConfig.class
})
public class JpaServerConfig {

	private static final Logger ourLog = LoggerFactory.getLogger(JpaServerConfig.class);

	@Bean(destroyMethod = "close")
	public DataSource dataSource(FhirgraphProperties theProperties) {
		HikariConfig config = new HikariConfig();
		if (theProperties.isPostgres()) {
			String url = theProperties.getDbUrl();
			if (url == null || !url.startsWith("jdbc:postgresql:")) {
				throw new IllegalStateException("fhirgraph.db=postgres needs fhirgraph.db-url=jdbc:postgresql://HOST:PORT/DATABASE");
			}
			ourLog.info("FHIR database: PostgreSQL {} (user {})", url, theProperties.getDbUser());
			config.setPoolName("fhirgraph-postgres");
			config.setDriverClassName("org.postgresql.Driver");
			config.setJdbcUrl(url);
			config.setUsername(theProperties.getDbUser());
			config.setPassword(theProperties.getDbPassword());
		} else {
			Path dataDir = theProperties.resolvedDataDir();
			try {
				Files.createDirectories(dataDir);
			} catch (IOException e) {
				throw new UncheckedIOException("Cannot create fhirgraph.data-dir " + dataDir, e);
			}
			// DB_CLOSE_ON_EXIT=FALSE: Spring closes the pool (and with it the database) on shutdown;
			// H2's own shutdown hook would otherwise race with in-flight work.
			String url = "jdbc:h2:file:" + dataDir.resolve("h2") + ";DB_CLOSE_ON_EXIT=FALSE";
			ourLog.info("FHIR data directory: {} (JDBC URL {})", dataDir, url);
			config.setPoolName("fhirgraph-h2");
			config.setDriverClassName("org.h2.Driver");
			config.setJdbcUrl(url);
			config.setUsername("sa");
			config.setPassword("");
		}
		config.setMaximumPoolSize(theProperties.getMaxDbConnections());
		config.setMinimumIdle(1);
		return new HikariDataSource(config);
	}

	@Bean
	public JpaStorageSettings storageSettings(FhirgraphProperties theProperties) {
		JpaStorageSettings settings = new JpaStorageSettings();

		settings.setEnforceReferentialIntegrityOnWrite(theProperties.isReferentialIntegrity());
		settings.setEnforceReferentialIntegrityOnDelete(theProperties.isReferentialIntegrity());

		settings.setEnforceReferenceTargetTypes(theProperties.isEnforceReferenceTargetTypes());

		// Absolute references to other servers are stored as written.
		settings.setAllowExternalReferences(true);

		// Wiping a server: POST /fhir/$expunge?expungeEverything=true, and delete-expunge.
		settings.setExpungeEnabled(true);
		settings.setAllowMultipleDelete(true);
		settings.setDeleteExpungeEnabled(true);

		if (theProperties.getMaxTransactionSize() > 0) {
			settings.setMaximumTransactionBundleSize(theProperties.getMaxTransactionSize());
		}

		// Ids: HAPI defaults (server-assigned sequential numeric; client ids via PUT allowed,
		// any alphanumeric). Spelled out because tests depend on them.
		settings.setResourceServerIdStrategy(JpaStorageSettings.IdStrategyEnum.SEQUENTIAL_NUMERIC);
		settings.setResourceClientIdStrategy(JpaStorageSettings.ClientIdStrategyEnum.ALPHANUMERIC);

		// Never answer a search from an earlier, cached result set: a write followed by the
		// same search must see the write (HAPI's default reuses results for 60 s).
		settings.setReuseCachedSearchResultsForMillis(null);

		// Gated batch2 jobs with a single chunk (e.g. small delete-expunge jobs) advance at once
		// instead of waiting for the next maintenance pass (fhirgraph.batch-maintenance-interval).
		settings.setJobFastTrackingEnabled(true);

		// Bulk export ($export): HAPI 8.8.0's defaults, spelled out because clients and tests
		// depend on them. Jobs run on this server (batch2 workers in this JVM); each NDJSON
		// output file holds at most 1000 resources (and at most ~100 MB); output Binaries and
		// finished jobs are purged 2 hours after the job, by a pass that runs once an hour.
		// An identical kickoff while a job is still queued or running gets that job's status URL
		// back unless it says Cache-Control: no-cache (in 8.8.0 only a bare $export without query
		// parameters ever matches: HAPI compares the request URL without its query string to the
		// stored one with it).
		settings.setEnableTaskBulkExportJobExecution(true);
		settings.setBulkExportFileMaximumCapacity(JpaStorageSettings.DEFAULT_BULK_EXPORT_FILE_MAXIMUM_CAPACITY);
		settings.setBulkExportFileMaximumSize(JpaStorageSettings.DEFAULT_BULK_EXPORT_MAXIMUM_WORK_CHUNK_SIZE);
		settings.setBulkExportFileRetentionPeriodHours(2);
		settings.setEnableBulkExportJobReuse(true);

		// No fulltext indexing (Hibernate Search is switched off in the JPA properties).
		settings.setHibernateSearchIndexFullText(false);
		settings.setAdvancedHSearchIndexing(false);
		return settings;
	}

	/**
	 * The batch2 maintenance pass every {@code fhirgraph.batch-maintenance-interval} instead of
	 * once a minute. Set after all singletons exist and before the context-refreshed event, at
	 * which HAPI's scheduler schedules the pass.
	 */
	@Bean
	public SmartInitializingSingleton batchMaintenanceInterval(
			IJobMaintenanceService theMaintenanceService, FhirgraphProperties theProperties) {
		return () -> {
			long millis = Math.max(100, theProperties.getBatchMaintenanceInterval().toMillis());
			if (theMaintenanceService instanceof JobMaintenanceServiceImpl maintenance) {
				maintenance.setScheduledJobFrequencyMillis(millis);
			} else {
				ourLog.warn("Cannot set the batch2 maintenance interval on {}", theMaintenanceService.getClass());
			}
		};
	}

	@Bean
	public PartitionSettings partitionSettings() {
		return new PartitionSettings();
	}

	@Bean
	public SubscriptionSettings subscriptionSettings() {
		// No subscription types are enabled and no subscription modules are loaded.
		return new SubscriptionSettings();
	}

	/** Binary content (Binary resources, attachments moved out of resources) goes to the database. */
	@Bean
	public DatabaseBinaryContentStorageSvcImpl binaryStorageSvc() {
		return new DatabaseBinaryContentStorageSvcImpl();
	}

	@Bean
	@Primary
	public LocalContainerEntityManagerFactoryBean entityManagerFactory(
			ConfigurableListableBeanFactory theBeanFactory,
			FhirContext theFhirContext,
			JpaStorageSettings theStorageSettings,
			DataSource theDataSource,
			FhirgraphProperties theProperties) {
		LocalContainerEntityManagerFactoryBean factory =
				HapiEntityManagerFactoryUtil.newEntityManagerFactory(theBeanFactory, theFhirContext, theStorageSettings);
		factory.setPersistenceUnitName("HAPI_PU");
		factory.setDataSource(theDataSource);

		Properties jpa = new Properties();
		// Hibernate creates the schema on an empty database (and adds what is missing later), on
		// H2 as on PostgreSQL; HAPI's dialects map its LOB and sequence types for each.
		jpa.put(
				"hibernate.dialect",
				theProperties.isPostgres()
						? HapiFhirPostgresDialect.class.getName()
						: HapiFhirH2Dialect.class.getName());
		jpa.put("hibernate.hbm2ddl.auto", "update");
		jpa.put("hibernate.format_sql", "false");
		jpa.put("hibernate.show_sql", "false");
		jpa.put("hibernate.jdbc.batch_size", "20");
		jpa.put("hibernate.cache.use_query_cache", "false");
		jpa.put("hibernate.cache.use_second_level_cache", "false");
		jpa.put("hibernate.cache.use_structured_entries", "false");
		jpa.put("hibernate.cache.use_minimal_puts", "false");
		// Entities come from the packages HAPI lists (setPackagesToScan); Hibernate need not
		// scan the 300 MB jar itself.
		jpa.put("hibernate.archive.scanner", "org.hibernate.boot.archive.scan.internal.DisabledScanner");
		// Envers auditing is only used for MDM link history (MDM is not enabled); off saves
		// several seconds of startup.
		jpa.put("hibernate.integration.envers.enabled", "false");
		// No Lucene/Elasticsearch fulltext indexing.
		jpa.put("hibernate.search.enabled", "false");
		jpa.putAll(theProperties.getJpa());
		factory.setJpaProperties(jpa);
		return factory;
	}

	@Bean
	@Primary
	public JpaTransactionManager transactionManager(EntityManagerFactory theEntityManagerFactory) {
		JpaTransactionManager manager = new JpaTransactionManager();
		manager.setEntityManagerFactory(theEntityManagerFactory);
		return manager;
	}

	/**
	 * Keep versions in references as the client wrote them ({@code Patient/1/_history/1}):
	 * HAPI's parser default strips them on storage. Applied as soon as HAPI's FhirContext
	 * bean exists, before any DAO uses it.
	 */
	@Bean
	public static BeanPostProcessor fhirContextCustomizer() {
		return new BeanPostProcessor() {
			@Override
			public Object postProcessAfterInitialization(Object theBean, String theBeanName) {
				if (theBean instanceof FhirContext context) {
					context.getParserOptions().setStripVersionsFromReferences(false);
				}
				return theBean;
			}
		};
	}
}

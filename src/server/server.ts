// The composition root: listener → router → interceptors → services. Nothing else wires
// things together; read this file to see everything the server serves and in which order
// calls pass through the interceptors.
import { randomUUID } from "node:crypto";
import { setMaxListeners } from "node:events";
import { accessSync, constants, mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { create, type DescService } from "@bufbuild/protobuf";
import type { ConnectRouter, ServiceImpl } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { AuditService } from "../gen/agentmachine/v1/audit_service_pb.js";
import { ContractService } from "../gen/agentmachine/v1/contract_service_pb.js";
import { DelegationService } from "../gen/agentmachine/v1/delegation_service_pb.js";
import { DiagnosticsService } from "../gen/agentmachine/v1/diagnostics_service_pb.js";
import { McpUpstreamService } from "../gen/agentmachine/v1/mcp_upstream_service_pb.js";
import { OperationService } from "../gen/agentmachine/v1/operation_service_pb.js";
import { OutputService } from "../gen/agentmachine/v1/output_service_pb.js";
import { PolicyService } from "../gen/agentmachine/v1/policy_service_pb.js";
import { ProfileService } from "../gen/agentmachine/v1/profile_service_pb.js";
import { RuntimeService } from "../gen/agentmachine/v1/runtime_service_pb.js";
import { OperationType } from "../gen/agentmachine/v1/types_pb.js";
import { WorkerService } from "../gen/agentmachine/v1/worker_service_pb.js";
import { WorkspaceService } from "../gen/agentmachine/v1/workspace_service_pb.js";
import { Health } from "../gen/grpc/health/v1/health_pb.js";
import * as reflectionV1 from "../gen/grpc/reflection/v1/reflection_pb.js";
import * as reflectionV1alpha from "../gen/grpc/reflection/v1alpha/reflection_pb.js";
import { loadOrCreateAuditKey, type AuditKey } from "../audit/audit-key.js";
import { AuditAppends } from "../audit/audit-tail.js";
import { Checkpointer } from "../audit/checkpointer.js";
import { RefusalSummaries } from "../audit/refusal-summaries.js";
import { buildServerContract } from "../contract/server-contract.js";
import { ExecutionIsolationSchema, SandboxMode, type ExecutionIsolation } from "../gen/agentmachine/v1/contract_service_pb.js";
import type { WorkspaceOperationContract } from "../gen/agentmachine/v1/contract_pb.js";
import { executionIsolation } from "../sandbox/execution-isolation.js";
import { ContainerExecutor } from "../executors/container-executor.js";
import type { Executor } from "../executors/executor.js";
import { LocalProcessExecutor } from "../executors/local-process.js";
import { RecordExecutor } from "../executors/record-executor.js";
import { DiagnosticsExecutor } from "../diagnostics/diagnostics-executor.js";
import { localSecrets } from "../diagnostics/local-secrets.js";
import { resolveExecutable } from "../process/resolve-executable.js";
import { EventHub } from "../lifecycle/event-hub.js";
import { withLeanWatch } from "./lean-watch.js";
import { ReplayScheduler } from "../model/replay-scheduler.js";
import { RetentionFloor } from "../lifecycle/retention-floor.js";
import { OutputWakeUps } from "../lifecycle/output-watch.js";
import { OperationRunner } from "../lifecycle/operation-runner.js";
import { MacTokens } from "../lifecycle/mac-token.js";
import { PageTokens } from "../lifecycle/page-token.js";
import { Authority } from "../governance/authority.js";
import { ExecutionCredentials } from "../governance/execution-credentials.js";
import type { SigningKey } from "../governance/credentials.js";
import { GrantIndex } from "../governance/grant-index.js";
import { legacyOperatorKeyWarning, operatorKeyFiles } from "../governance/operator-key.js";
import { PolicyDirectory } from "../governance/policy/policy-directory.js";
import { PolicyEngine } from "../governance/policy/policy-engine.js";
import { loadServerKey } from "../governance/server-key.js";
import { TrustAnchors } from "../governance/trust-anchors.js";
import { auditService } from "../services/audit-service.js";
import { contractService } from "../services/contract-service.js";
import { delegationService } from "../services/delegation-service.js";
import { diagnosticsService } from "../services/diagnostics-service.js";
import { mcpUpstreamService } from "../services/mcp-upstream-service.js";
import { operationService } from "../services/operation-service.js";
import { outputService } from "../services/output-service.js";
import { policyService } from "../services/policy-service.js";
import { profileService } from "../services/profile-service.js";
import { runtimeService } from "../services/runtime-service.js";
import { workerService } from "../services/worker-service.js";
import { workspaceService } from "../services/workspace-service.js";
import { WorkspaceKeeper } from "../lifecycle/workspace-keeper.js";
import { WorkerPool } from "../workers/worker-pool.js";
import { openStore } from "../store/open-store.js";
import { randomSecret } from "../store/random-secret.js";
import type { OperationStore } from "../store/store.js";
import { healthService } from "../services/health-service.js";
import { Reflector, reflectionServiceV1, reflectionServiceV1alpha } from "../services/reflection-service.js";
import type { ServerConfig } from "../config/config.js";
import { errorDetailTypes, shuttingDown } from "../api/errors.js";
import { HealthStatus, ServingStatus } from "../api/health.js";
import { auditInterceptor } from "./audit-interceptor.js";
import { authInterceptor } from "./auth-interceptor.js";
import { withCallProfiles } from "../api/call-profiles.js";
import { errorInterceptor, loggingInterceptor, validationInterceptor } from "./interceptors.js";
import { traceInterceptor } from "./trace-interceptor.js";
import { createLogger, recentErrors, type Logger } from "../api/logger.js";
import { liveReload } from "./live-reload.js";
import { listenOnePort } from "./one-port-listener.js";
import { egressProxy, refusePlainProxyRequest } from "../gateways/egress-proxy.js";
import { isMcpRequest, mcpGateway } from "../gateways/mcp-gateway.js";
import { UpstreamClients } from "../gateways/mcp-upstream-clients.js";
import { readMcpUpstreams } from "../gateways/mcp-upstreams.js";
import { UpstreamDeclarations } from "../gateways/mcp-upstream-declarations.js";
import { UpstreamEgress } from "../gateways/mcp-upstream-egress.js";
import { serverVersion } from "../diagnostics/collect.js";
import { modelGateway } from "../gateways/model-gateway.js";
import { rawRequestContextValues } from "../call/raw-request.js";
import { answerUnknownRoute } from "./unknown-route.js";
import { ConsoleAssets } from "./console-assets.js";
import { consoleRoute } from "./console-route.js";
import { PlaneMetrics } from "../metrics/plane-metrics.js";
import { measuredStore } from "../metrics/measured-store.js";
import { listenForMetrics } from "./metrics-listener.js";
import { rpcMetricsInterceptor } from "./rpc-metrics.js";

export interface RunningServer {
  /** Base URL, e.g. `http://127.0.0.1:7070`. */
  url: string;
  port: number;
  health: HealthStatus;
  store: OperationStore;
  /** With --metrics-listen: where Prometheus scrapes, `http://HOST:PORT/metrics`. */
  metricsUrl?: string;
  /** Reads the trust anchors and the policy directory again, as a restart would (`amctl serve` on SIGHUP). Never rejects. */
  reload(trigger: string): Promise<void>;
  /** Graceful shutdown: NOT_SERVING, end streams, drain calls, close within the grace period. */
  close(): Promise<void>;
}

/** The parts of a running server that its services are made of (startServer builds them). */
interface ServiceParts {
  config: ServerConfig;
  dataDir: string;
  log: Logger;
  store: OperationStore;
  hub: EventHub;
  replays: ReplayScheduler;
  retention: RetentionFloor;
  outputWakeUps: OutputWakeUps;
  runner: OperationRunner;
  keeper: WorkspaceKeeper;
  pageTokens: PageTokens;
  callTickets: MacTokens;
  policy: PolicyEngine;
  grants: GrantIndex;
  authority: Authority;
  serverKey: SigningKey;
  auditKey: AuditKey;
  auditAppends: AuditAppends;
  ownContract: WorkspaceOperationContract;
  isolation: ExecutionIsolation;
  /** What admission knows of this server: the types it can run, where and whether sandboxed. */
  admission: { executable: ReadonlySet<OperationType>; workerSelectors: boolean; sandboxUnavailable?: string; dataDir: string };
  workers: WorkerPool | undefined;
  metrics: PlaneMetrics | undefined;
  health: HealthStatus;
  reflector: Reflector;
  /** The MCP gateway's upstreams: who declares them, and its clients of them. */
  mcpUpstreams: { declarations: UpstreamDeclarations; clients: UpstreamClients };
}

/** A served service: its descriptor, and its implementation made from the server's parts. */
interface Served {
  service: DescService;
  implement(parts: ServiceParts): Partial<ServiceImpl<DescService>>;
}

/** Checks that a line's implementation is of its descriptor, then forgets the type so one list holds every line. */
function serve<S extends DescService>(service: S, implement: (parts: ServiceParts) => ServiceImpl<S>): Served {
  return { service, implement: implement as Served["implement"] };
}

/**
 * Everything the server serves, one line each: the router registers these, reflection
 * describes their files (and the files those import), and health reports each by name.
 */
const served: readonly Served[] = [
  serve(ContractService, (p) => contractService(p.ownContract, p.isolation)),
  serve(OperationService, (p) =>
    operationService({
      ...p.admission,
      store: p.store,
      hub: p.hub,
      replays: p.replays,
      replayPages: p.config.replay,
      retention: p.retention,
      runner: p.runner,
      pageTokens: p.pageTokens,
      policy: p.policy,
      defaultBudget: p.config.defaultBudget,
      bookmarkIntervalMs: p.config.bookmarkIntervalMs,
      slowSubscriberTimeoutMs: p.config.slowSubscriberTimeoutMs,
      metrics: p.metrics,
      authority: p.authority,
      workspaceRoom: () => p.keeper.ensureRoom(),
    }),
  ),
  serve(OutputService, (p) =>
    outputService({
      store: p.store,
      wakeUps: p.outputWakeUps,
      authority: p.authority,
      slowSubscriberTimeoutMs: p.config.slowSubscriberTimeoutMs,
      metrics: p.metrics,
    }),
  ),
  serve(DelegationService, (p) =>
    delegationService({
      store: p.store,
      authority: p.authority,
      pageTokens: p.pageTokens,
      serverKey: p.serverKey,
      cancelOperationsUnder: (names) => p.runner.cancelOperationsUnder(names),
    }),
  ),
  serve(PolicyService, (p) =>
    policyService({ ...p.admission, store: p.store, policy: p.policy, grants: p.grants, defaultBudget: p.config.defaultBudget, pageTokens: p.pageTokens }),
  ),
  serve(McpUpstreamService, (p) =>
    mcpUpstreamService({
      store: p.store,
      pageTokens: p.pageTokens,
      declarations: p.mcpUpstreams.declarations,
      changed: () => p.mcpUpstreams.clients.sync(),
    }),
  ),
  serve(RuntimeService, (p) => runtimeService({ store: p.store, policy: p.policy, grants: p.grants, runner: p.runner, callTickets: p.callTickets })),
  serve(ProfileService, () => profileService()),
  serve(DiagnosticsService, (p) => diagnosticsService({ store: p.store, dataDir: p.dataDir })),
  serve(AuditService, (p) =>
    auditService({
      store: p.store,
      appends: p.auditAppends,
      replays: p.replays,
      pageTokens: p.pageTokens,
      verifierKey: p.auditKey.verifierKey,
      authority: p.authority,
      slowSubscriberTimeoutMs: p.config.slowSubscriberTimeoutMs,
      metrics: p.metrics,
    }),
  ),
  serve(WorkerService, (p) => workerService({ pool: p.workers, authority: p.authority })),
  serve(WorkspaceService, (p) => workspaceService({ store: p.store, dataDir: p.dataDir, policy: p.policy, pageTokens: p.pageTokens, keeper: p.keeper })),
  serve(Health, (p) => healthService(p.health)),
  serve(reflectionV1.ServerReflection, (p) => reflectionServiceV1(p.reflector)),
  serve(reflectionV1alpha.ServerReflection, (p) => reflectionServiceV1alpha(p.reflector)),
];

/** The services we serve, as descriptors (the auth matrix test enumerates their methods). */
export const servedServiceDescriptors: readonly DescService[] = served.map(({ service }) => service);

const servedServices = servedServiceDescriptors.map((service) => service.typeName);

/**
 * A health entry that is no service: SERVING when every execution this server runs is
 * sandboxed, NOT_SERVING when it runs with --unsafe-no-sandbox or cannot sandbox (a monitor
 * can alert on it with any gRPC health client).
 */
export const SANDBOX_HEALTH_SERVICE = "agentmachine.v1.ExecutionSandbox";

const REMOTE_WORKERS_DETAIL =
  "executions run on remote workers, each of which sandboxes them (amctl worker refuses to start without a sandbox unless --unsafe-no-sandbox)";

function resolveContainerRuntime(runtime: string): string {
  try {
    return resolveExecutable(runtime);
  } catch (error) {
    throw new Error(`--container-runtime ${runtime}: ${(error as Error).message}`);
  }
}

/**
 * On a store other replicas share, runs `task` every `ms`: what they change is seen here only by
 * reading. None on an exclusive store, where every change is this process's own.
 */
function whileShared(store: { exclusive: boolean }, ms: number, task: () => Promise<unknown>, failed: (error: unknown) => void): NodeJS.Timeout | undefined {
  if (store.exclusive) return undefined;
  const timer = setInterval(() => void task().catch(failed), ms);
  timer.unref();
  return timer;
}

function ensureDataDir(dataDir: string): string {
  const path = resolve(dataDir);
  mkdirSync(path, { recursive: true, mode: 0o700 });
  accessSync(path, constants.W_OK);
  return path;
}

export async function startServer(config: ServerConfig, log: Logger = createLogger(config.logLevel)): Promise<RunningServer> {
  const dataDir = ensureDataDir(config.dataDir);
  // Before anything is opened: a runtime that is not there stops the start.
  const containerRuntime = config.containerRuntime === undefined ? undefined : resolveContainerRuntime(config.containerRuntime);
  const health = new HealthStatus(servedServices);
  const shutdown = new AbortController();
  // Every call in flight listens on this signal (and stops listening when it ends), so the
  // default limit of 10 listeners would warn of a leak under ordinary load.
  setMaxListeners(0, shutdown.signal);
  const reflector = new Reflector(
    servedServiceDescriptors.map((service) => service.file),
    servedServices,
  );

  // With --metrics-listen: the metrics, counted from here on (without it, nothing is counted).
  const metrics = config.metricsListen === undefined ? undefined : new PlaneMetrics();
  const opened = await openStore(config, dataDir);
  const store = metrics === undefined ? opened : measuredStore(opened, metrics);
  // A replica that lost its database cannot serve: a load balancer that checks health sends
  // calls elsewhere until the store is back and has caught up with the others' events.
  store.onAvailability((available, reason) => {
    if (shutdown.signal.aborted) return;
    if (available) log.info("the store is available again");
    else log.warn({ reason }, "the store is unavailable");
    health.setAll(available ? ServingStatus.SERVING : ServingStatus.NOT_SERVING);
  });
  const hub = await EventHub.open(store);
  const retention = await RetentionFloor.open(store);
  const outputWakeUps = new OutputWakeUps(store);
  const pageTokenKey = await store.getOrCreateSecret("page-token-key", randomSecret);
  const pageTokens = new PageTokens(pageTokenKey);
  const callTicketKey = await store.getOrCreateSecret("call-ticket-key", randomSecret);
  // The audit log is named by an id kept in the store, so that replicas on one store sign
  // checkpoints of one log; its key file is theirs to share (--audit-key).
  const auditOrigin = `agent-machine/audit/${await store.getOrCreateSecret("audit-log-id", randomUUID)}`;
  const auditKey = loadOrCreateAuditKey(config.auditKeyFile ?? join(dataDir, "audit", "signing-key.pem"), auditOrigin);
  const checkpointer = new Checkpointer({
    store,
    key: auditKey,
    origin: auditOrigin,
    intervalMs: config.auditCheckpointIntervalMs,
    everyRecords: 1000,
    log,
    metrics,
  });
  const auditAppends = new AuditAppends(store);
  const refusals = new RefusalSummaries({
    append: (draft) => store.appendAudit(draft),
    intervalMs: config.auditRefusalIntervalMs,
    maxSources: config.auditRefusalSources,
    log,
  });
  const serverKey = await loadServerKey(store);
  const initAnchor = operatorKeyFiles(dataDir).publicKey;
  const legacyOperatorKey = legacyOperatorKeyWarning(dataDir);
  if (legacyOperatorKey !== undefined) log.warn(legacyOperatorKey);
  const anchors = await TrustAnchors.load({ required: config.trustAnchors, optional: [initAnchor] }, [serverKey.verifying], log);
  const authority = new Authority({
    store,
    keys: anchors,
    cacheMs: config.credentialCacheMs,
  });
  // On a shared store, revocations made through other replicas end this replica's streams too.
  const revocationChecks = whileShared(
    store,
    config.credentialCacheMs,
    () => authority.checkRevocations(),
    (error) => log.warn({ err: error }, "could not check for revocations"),
  );
  if (anchors.anchorFiles().length === 0) {
    log.warn(
      `no trust anchor yet: no credential is valid, so only health and reflection answer until \`amctl init\` writes ${initAnchor} (taken up as it appears, no restart needed)`,
    );
  }
  const policy = new PolicyEngine(store, log, metrics);
  const grants = new GrantIndex(store);
  // Other replicas may apply bundles: a shared store is read again on every runner heartbeat.
  const policyRefresh = whileShared(
    store,
    config.runnerHeartbeatMs,
    () => policy.load(),
    (error) => log.warn({ err: error }, "could not reload the policy bundles"),
  );
  await policy.load();
  // The default directory (where `amctl init` puts the default bundles) may come later; it is watched until it does.
  const policyDirectory = new PolicyDirectory(config.policyDir ?? join(dataDir, "policies"), policy, log);
  await policyDirectory.applyAtStart(config.policyDir !== undefined);
  const reloads = liveReload({ anchors, anchorFiles: [...config.trustAnchors, initAnchor], policy: policyDirectory, log });
  if ((await store.listPolicyBundles()).length === 0) {
    log.warn(
      `no policy bundle yet: every policy gate denies until one is in ${policyDirectory.dir} (applied as it appears, no restart needed; amctl init writes the defaults there) or applied with amctl policy apply`,
    );
  }
  const ownContract = buildServerContract({ defaultBudget: config.defaultBudget, startedAt: new Date() });
  let url = "";
  // With --workers, executions run on remote workers only; the pool is their executor.
  const workers = config.remoteWorkers === undefined ? undefined : new WorkerPool(config.remoteWorkers);
  // Executions here run sandboxed, or not at all unless the operator said --unsafe-no-sandbox.
  // On remote workers, each worker sandboxes what it runs (amctl worker makes the same choice).
  const isolation = workers === undefined ? executionIsolation(config.sandbox) : { mode: SandboxMode.ENFORCED, detail: REMOTE_WORKERS_DETAIL };
  if (isolation.mode === SandboxMode.DISABLED_UNSAFE) log.warn(isolation.detail);
  if (isolation.mode === SandboxMode.UNAVAILABLE) log.warn(`executions will be refused (SANDBOX_UNAVAILABLE): ${isolation.detail}`);
  health.pin(SANDBOX_HEALTH_SERVICE, isolation.mode === SandboxMode.ENFORCED ? ServingStatus.SERVING : ServingStatus.NOT_SERVING);
  const records = new RecordExecutor({ store });
  const executors = new Map<OperationType, Executor>([
    [OperationType.PROFILE_CREATE, records],
    [
      OperationType.EXECUTION_START,
      workers ?? new LocalProcessExecutor({ ...config.execution, ...(isolation.sandboxes ? { sandboxes: isolation.sandboxes } : {}) }),
    ],
    [OperationType.TOOL_GRANT_APPLY, records],
    [OperationType.TOOL_GRANT_REVOKE, records],
    [OperationType.MODEL_PROVIDER_BIND, records],
    [
      OperationType.DIAGNOSTICS_EXPORT_REDACTED,
      new DiagnosticsExecutor({
        store,
        dataDir,
        config,
        health,
        recentErrors: () => recentErrors(log),
        credentialKeyIds: () => anchors.everTrustedKeyIds(),
        localSecrets: () =>
          localSecrets(store, dataDir, [pageTokenKey, callTicketKey, auditKey.privateKey.export({ format: "pem", type: "pkcs8" }).toString()]),
      }),
    ],
  ]);
  if (containerRuntime !== undefined) executors.set(OperationType.CONTAINER_RUN, new ContainerExecutor({ ...config.execution, runtime: containerRuntime }));
  const runner = new OperationRunner({
    store,
    dataDir,
    // The workers' capacity bounds what runs on them; this server runs none itself.
    maxConcurrent: workers === undefined ? config.maxConcurrentExecutions : Number.MAX_SAFE_INTEGER,
    defaultRetry: config.defaultRetry,
    log,
    executors,
    credentials: new ExecutionCredentials(store, serverKey.signing),
    serverAddress: () => url,
    revoked: (names) => authority.revoked(names),
    runnerId: `runners/${randomUUID()}`,
    heartbeatMs: config.runnerHeartbeatMs,
    runnerTimeoutMs: config.runnerTimeoutMs,
    outputLimitBytes: config.execution.outputLimitBytes,
  });
  /** Admission refuses the types the runner cannot run, so none is stored that could never run. */
  const executable = runner.executable;
  metrics?.watch(store, runner);
  const keeper = new WorkspaceKeeper({ store, dataDir, retentionMs: config.workspaceRetentionMs, diskLimitBytes: config.workspaceDiskLimitBytes, log });
  const compaction = setInterval(() => {
    retention.compact(config.eventRetention, new Date()).catch((error: unknown) => log.error({ err: error }, "event compaction failed"));
    store
      .compactOutput(new Date(Date.now() - (config.outputRetentionMs ?? config.eventRetention.maxAgeMs)))
      .catch((error: unknown) => log.error({ err: error }, "output compaction failed"));
    keeper.sweep().catch((error: unknown) => log.error({ err: error }, "workspace sweep failed"));
  }, config.compactionIntervalMs);
  compaction.unref();

  // The MCP gateway's upstreams: the file's, fixed, and the store's, taken up as they change.
  const upstreamEgress = new UpstreamEgress();
  const declarations = new UpstreamDeclarations(
    { path: config.mcpUpstreams, upstreams: config.mcpUpstreams === undefined ? [] : readMcpUpstreams(config.mcpUpstreams) },
    store,
    log,
  );
  const upstreamClients = new UpstreamClients({
    declarations,
    sandboxes: isolation.sandboxes,
    dir: join(dataDir, "mcp-upstreams"),
    plane: () => ({ host: new URL(url).hostname.replace(/^\[|\]$/g, ""), port: Number(new URL(url).port) }),
    egressCredentials: upstreamEgress,
    version: serverVersion(),
  });
  // Another replica's change ends this replica's calls to what it replaced or removed within a
  // heartbeat (this replica's own changes, and any call here, take it up at once).
  const upstreamRefresh = whileShared(
    store,
    config.runnerHeartbeatMs,
    () => upstreamClients.sync(),
    (error) => log.warn({ err: error }, "could not read the upstream MCP servers"),
  );

  const parts: ServiceParts = {
    config,
    dataDir,
    log,
    store,
    hub,
    replays: new ReplayScheduler(config.replay.pagesInFlight),
    retention,
    outputWakeUps,
    runner,
    keeper,
    pageTokens,
    callTickets: new MacTokens(callTicketKey),
    policy,
    grants,
    authority,
    serverKey: serverKey.signing,
    auditKey,
    auditAppends,
    ownContract,
    isolation: create(ExecutionIsolationSchema, { mode: isolation.mode, detail: isolation.detail }),
    admission: {
      executable,
      workerSelectors: workers !== undefined,
      dataDir,
      ...(isolation.mode === SandboxMode.UNAVAILABLE ? { sandboxUnavailable: isolation.detail } : {}),
    },
    workers,
    metrics,
    health,
    reflector,
    mcpUpstreams: { declarations, clients: upstreamClients },
  };
  // One implementation of each service, for the router and the lean watch path alike.
  const implementations = new Map(served.map(({ service, implement }) => [service, implement(parts)] as const));
  const routes = (router: ConnectRouter): void => {
    for (const [service, implementation] of implementations) router.service(service, implementation);
  };

  const interceptors = [
    // Outermost: the RPC metrics count each call with the code its client gets.
    ...(metrics !== undefined ? [rpcMetricsInterceptor(metrics.registry)] : []),
    // The call's span: what the call does (admission, policy, store commits) nests below it.
    traceInterceptor(),
    errorInterceptor(log),
    loggingInterceptor(log),
    ...(config.audit ? [auditInterceptor(store, refusals, log)] : []),
    authInterceptor(authority),
    validationInterceptor(),
  ];
  // JSON clients (curl) see `"valid": false` and empty lists rather than absent keys, and the
  // details of EvaluatePolicyResponse.denial whole.
  const jsonOptions = { alwaysEmitImplicit: true, registry: errorDetailTypes };
  const adapter = connectNodeAdapter({
    routes,
    interceptors,
    readMaxBytes: config.maxMessageBytes,
    // Paths that are no RPC: the web console, else the unknown-route answer.
    fallback: consoleRoute({ assets: new ConsoleAssets(), actions: config.consoleActions }, answerUnknownRoute),
    contextValues: rawRequestContextValues,
    jsonOptions,
    shutdownSignal: shutdown.signal,
  });
  // The watch RPCs over gRPC skip connect-node's per-message pipeline, with the same interceptors.
  const watchAware = withLeanWatch(adapter, {
    implementations,
    interceptors,
    readMaxBytes: config.maxMessageBytes,
    jsonOptions,
    shutdownSignal: shutdown.signal,
    contextValues: rawRequestContextValues,
    enabled: () => config.leanWatchStreams,
  });
  // Each call keeps a record of the profiles it concerns, for its log lines.
  const rpcs = withCallProfiles(watchAware);
  // The model-provider gateway's paths (/v1/chat/completions, /v1/messages, /api/chat, …) first.
  const models = modelGateway({ store, policy, grants, authority, runner, log, audit: config.audit, dataDir });
  const handler: typeof rpcs = (req, res) => {
    if (!models(req, res)) rpcs(req, res);
  };

  // MCP stdio upstreams reach their declared destinations through the same egress proxy.
  const egress = egressProxy({ store, policy, grants, authority, runner, log, audit: config.audit, upstreamEgress });
  // The MCP gateway: /mcp on the same port, forwarding to the operator's upstream MCP servers.
  const mcp = mcpGateway({
    store,
    policy,
    grants,
    authority,
    runner,
    log,
    audit: config.audit,
    version: serverVersion(),
    maxBodyBytes: config.maxMessageBytes,
    upstreams: upstreamClients,
  });
  const listener = await listenOnePort((req, res) => (isMcpRequest(req.url) ? mcp.handle(req, res) : handler(req, res)), {
    host: config.host,
    port: config.port,
    prefaceTimeoutMs: config.connectionPrefaceTimeoutMs,
    limits: config.connectionLimits,
    log,
    proxy: { connect: egress, plainRequest: refusePlainProxyRequest },
  });
  const { address, port } = listener.address();
  const host = address.includes(":") ? `[${address}]` : address;
  url = `http://${host}:${port}`;
  // After listening: recovered executions get this server's address.
  await runner.recover();
  const metricsListener = metrics && config.metricsListen && (await listenForMetrics(metrics.registry, config.metricsListen, log));
  const metricsUrl = metricsListener?.url;
  log.info(
    { url, dataDir, services: servedServices, trustAnchors: anchors.anchorFiles(), containerRuntime, connectionLimits: config.connectionLimits, metricsUrl },
    "serving",
  );

  let closing: Promise<void> | undefined;
  return {
    url,
    port,
    health,
    store,
    metricsUrl,
    reload: (trigger) => reloads.reload(trigger),
    close() {
      closing ??= (async () => {
        log.info("shutting down");
        health.setAll(ServingStatus.NOT_SERVING);
        shutdown.abort(shuttingDown());
        clearInterval(compaction);
        clearInterval(policyRefresh);
        clearInterval(upstreamRefresh);
        clearInterval(revocationChecks);
        reloads.close();
        runner.stop();
        workers?.close();
        isolation.sandboxes?.close();
        await listener.close(config.shutdownGraceMs);
        await mcp.close();
        await metricsListener?.close();
        // After the last call: the refusals counted so far are recorded, and the final
        // checkpoint covers every record.
        await refusals.close();
        await checkpointer.close();
        await store.close();
        log.info("stopped");
      })();
      return closing;
    },
  };
}

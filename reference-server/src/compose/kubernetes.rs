//! The topology on Kubernetes (SPEC §6): a Deployment and a Service per service of the
//! plan, written by `catwar-server kubernetes manifests` into `deploy/kubernetes/`.
//!
//! Pods get a new address whenever they start, but the plan names every service by one
//! address that the others and the clients use. So each Service gets a fixed ClusterIP,
//! the service's plan address, and each pod listens on every address at its plan port
//! (`serve NAME --listen 0.0.0.0:PORT`). The addresses come from the low band of the
//! cluster's service range, which Kubernetes keeps for fixed addresses and hands out
//! last (KEP-3070), so they do not collide with the addresses it picks itself.
//!
//! SQLite in WAL mode is safe on one host only: the data folder is one hostPath volume
//! whose node affinity puts every pod that mounts it on the node labelled
//! `catwar.io/data=true`. Many nodes need a SQL server in its place (docs/scale-out.md).
//! The internal key and profile's certificate live in that folder, as on one machine.
//!
//! Each pod's admin listener (`/metrics`, `/healthz`) listens on every address at its
//! plan port, named `metrics` in the pod and the Service, and the pod carries the
//! `prometheus.io/scrape`, `prometheus.io/port` and `prometheus.io/path` annotations
//! that the usual Kubernetes scrape configurations of Prometheus look for.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

use crate::compose::supervisor::SHUTDOWN_GRACE_MS;
use crate::compose::topology::{Plan, PlannedService, ServiceKind, TopologyError};
use crate::config::{ObserverBackend, Settings};
use crate::services::observer::docker::IMAGE;

/// The namespace of every object.
const NAMESPACE: &str = "catwar";
/// The label of the one node that holds the data folder
/// (`kubectl label node NODE catwar.io/data=true`).
const DATA_NODE_LABEL: &str = "catwar.io/data";
/// The data folder on that node.
const DATA_HOST_PATH: &str = "/var/lib/catwar";
/// Where pods mount the data folder: the plan's data folder.
const DATA_MOUNT: &str = "/data";
/// The volume and its claim.
const DATA_VOLUME: &str = "catwar-data";
/// What the claim asks for. A hostPath volume enforces no size, but a claim binds only
/// to a volume at least as large as it asks, so both name the same figure.
const DATA_CAPACITY: &str = "10Gi";
/// The ConfigMap that holds `plan.json`.
const PLAN_CONFIG_MAP: &str = "catwar-plan";
/// Where server pods find the plan.
const PLAN_MOUNT: &str = "/etc/catwar";
/// The plan's file name, in the ConfigMap and in the pods.
const PLAN_FILE: &str = "plan.json";
/// The first fixed ClusterIP. 10.96.0.0/12 is the service range of kubeadm, kind and
/// minikube; its first 256 addresses are the band kept for fixed addresses, and the API
/// server and DNS hold the first dozen. Other clusters: `--service-ip-first`.
pub const SERVICE_IP_FIRST_DEFAULT: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 200);
/// The variable that tells `catwar-server observer` where to listen when no `--listen`
/// is given. Play pods set it to their pod address: an observer runs as a child process
/// in its play server's pod, and watchers in other pods reach it at that address.
pub const OBSERVER_LISTEN_ENV: &str = "CATWAR_OBSERVER_LISTEN";
/// Users the prepare Job seeds; the simulator's scenario in `sim.yaml` draws its
/// clients from them.
const SEED_USERS: u64 = 1_000;
/// Readiness is probed every second, and two failures take a pod out of its Service: a
/// service that stopped answering then refuses connections, as a dead process does.
const READY_PERIOD_S: u64 = 1;
/// See [`READY_PERIOD_S`].
const READY_FAILURES: u32 = 2;
/// Liveness is probed every five seconds, and three failures restart the container:
/// `/healthz` is answered on the event loop, so only a loop stuck for 15 s fails it.
const LIVE_PERIOD_S: u64 = 5;
/// See [`LIVE_PERIOD_S`].
const LIVE_FAILURES: u32 = 3;

/// The name of the admin listener's port in pods and Services.
const METRICS_PORT_NAME: &str = "metrics";

/// The manifest files, written in this order and applied in it.
const FILES: [&str; 2] = ["data.yaml", "services.yaml"];

/// The plan on Kubernetes: each service at a fixed ClusterIP from `service_ip_first`
/// up, at its port of the fixed layout from `base_port`, with the data folder at
/// `/data`. Match observers are child processes of their play server: no pod
/// has a container engine to start them in.
pub fn plan(
    mut settings: Settings,
    base_port: u16,
    service_ip_first: Ipv4Addr,
) -> Result<Plan, TopologyError> {
    settings.observer_backend = ObserverBackend::Process;
    Plan::at_own_addresses(DATA_MOUNT.into(), settings, base_port, service_ip_first)
}

/// The manifests of a plan and their file names, in the order they are applied.
pub fn manifests(plan: &Plan) -> [(&'static str, String); 2] {
    [
        (FILES[0], data_manifest(plan)),
        (FILES[1], services_manifest(plan)),
    ]
}

/// What holds the data and prepares it: the namespace, the volume on the data node and
/// its claim, the plan, and the Job that readies the folder and seeds the users.
fn data_manifest(plan: &Plan) -> String {
    let plan_json = serde_json::to_string_pretty(plan).expect("plain values serialize");
    let mut y = format!(
        "\
# Written by `catwar-server kubernetes manifests`; apply before services.yaml.
apiVersion: v1
kind: Namespace
metadata:
  name: {NAMESPACE}
---
# The data folder, on the one node labelled {DATA_NODE_LABEL}=true: SQLite (WAL) is safe
# on one host only, so every pod that mounts it runs there.
apiVersion: v1
kind: PersistentVolume
metadata:
  name: {DATA_VOLUME}
spec:
  capacity:
    storage: {DATA_CAPACITY}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: \"\"
  claimRef:
    namespace: {NAMESPACE}
    name: {DATA_VOLUME}
  hostPath:
    path: {DATA_HOST_PATH}
    type: DirectoryOrCreate
  nodeAffinity:
    required:
      nodeSelectorTerms:
        - matchExpressions:
            - key: {DATA_NODE_LABEL}
              operator: In
              values: [\"true\"]
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: {DATA_VOLUME}
  namespace: {NAMESPACE}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: \"\"
  volumeName: {DATA_VOLUME}
  resources:
    requests:
      storage: {DATA_CAPACITY}
---
# What `serve` reads in every server pod: the data folder, settings and addresses.
apiVersion: v1
kind: ConfigMap
metadata:
  name: {PLAN_CONFIG_MAP}
  namespace: {NAMESPACE}
data:
  {PLAN_FILE}: |
"
    );
    let _ = writeln!(y, "{}", indent(&plan_json, 4));
    prepare_job(&mut y, plan);
    y
}

/// The Job that readies the data folder (resources, state, the user DB, topology.json)
/// and then seeds the users.
fn prepare_job(y: &mut String, plan: &Plan) {
    let prepare = args(&["kubernetes", "prepare", "--plan", &plan_path()]);
    let count = SEED_USERS.to_string();
    let argon2 = plan.settings.argon2.as_str();
    let seed = args(&[
        "users", "seed", "--data", DATA_MOUNT, "--count", &count, "--argon2", argon2,
    ]);
    let _ = write!(
        y,
        "\
---
# Readies the data folder and seeds the users; apply services.yaml once it completed.
apiVersion: batch/v1
kind: Job
metadata:
  name: catwar-prepare
  namespace: {NAMESPACE}
spec:
  # A failed preparation is a bug to read in the log, not a flake to retry.
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      initContainers:
        - name: prepare
          image: {IMAGE}
          imagePullPolicy: Never
          args: {prepare}
{mounts_with_plan}      containers:
        - name: seed
          image: {IMAGE}
          imagePullPolicy: Never
          args: {seed}
{data_mount}{volumes}",
        mounts_with_plan = mounts(true),
        data_mount = mounts(false),
        volumes = volumes(),
    );
}

/// A Service at its fixed ClusterIP and a Deployment of one pod for every service.
fn services_manifest(plan: &Plan) -> String {
    let mut y = String::from(
        "# Written by `catwar-server kubernetes manifests`; apply after data.yaml's Job completed.\n",
    );
    for (i, service) in plan.services.iter().enumerate() {
        let kind = ServiceKind::parse(&service.name).expect("planned services parse");
        if i > 0 {
            y.push_str("---\n");
        }
        cluster_service(&mut y, service, kind);
        y.push_str("---\n");
        deployment(&mut y, service, kind);
    }
    y
}

/// What a service speaks, as far as its probes care.
#[derive(Clone, Copy)]
enum Protocol {
    /// HTTP/1.1: `GET /healthz`.
    Http,
    /// HTTPS (profile): `GET /healthz`, the certificate not checked by the kubelet.
    Https,
    /// JSON lines (play servers): a TCP connection is all a probe can ask for.
    Lines,
}

impl Protocol {
    fn of(kind: ServiceKind) -> Protocol {
        match kind {
            ServiceKind::Profile => Protocol::Https,
            ServiceKind::Play(_) => Protocol::Lines,
            _ => Protocol::Http,
        }
    }

    /// The port's name in the Service and the container.
    fn port_name(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Https => "https",
            Protocol::Lines => "lines",
        }
    }

    /// The probe's action on `port`, each line indented by `spaces`.
    fn probe_action(self, port: u16, spaces: usize) -> String {
        let action = match self {
            Protocol::Http => format!("httpGet:\n  path: /healthz\n  port: {port}"),
            Protocol::Https => {
                format!("httpGet:\n  path: /healthz\n  port: {port}\n  scheme: HTTPS")
            }
            Protocol::Lines => format!("tcpSocket:\n  port: {port}"),
        };
        indent(&action, spaces)
    }
}

fn object_name(service: &str) -> String {
    format!("{NAMESPACE}-{service}")
}

/// The labels that name a service's objects and select its pod, indented by `spaces`.
fn labels(service: &str, spaces: usize) -> String {
    let labels =
        format!("app.kubernetes.io/name: catwar-server\napp.kubernetes.io/component: {service}");
    indent(&labels, spaces)
}

fn cluster_service(y: &mut String, service: &PlannedService, kind: ServiceKind) {
    let _ = write!(
        y,
        "\
apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: {NAMESPACE}
  labels:
{labels}
spec:
  clusterIP: {ip}
  selector:
{labels}
  ports:
    - name: {port_name}
      port: {port}
      targetPort: {port}
    - name: {METRICS_PORT_NAME}
      port: {metrics}
      targetPort: {metrics}
",
        name = object_name(&service.name),
        labels = labels(&service.name, 4),
        ip = service.addr.ip(),
        port_name = Protocol::of(kind).port_name(),
        port = service.addr.port(),
        metrics = service.metrics.port(),
    );
}

fn deployment(y: &mut String, service: &PlannedService, kind: ServiceKind) {
    let name = &service.name;
    let port = service.addr.port();
    let protocol = Protocol::of(kind);
    let metrics = service.metrics.port();
    let listen = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)).to_string();
    let metrics_listen = SocketAddr::from((Ipv4Addr::UNSPECIFIED, metrics)).to_string();
    let serve = args(&[
        "serve",
        name,
        "--plan",
        &plan_path(),
        "--listen",
        &listen,
        "--metrics-listen",
        &metrics_listen,
    ]);
    let env = if matches!(kind, ServiceKind::Play(_)) {
        observer_env()
    } else {
        String::new()
    };
    let _ = write!(
        y,
        "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {object}
  namespace: {NAMESPACE}
  labels:
{labels4}
spec:
  replicas: 1
  # One pod at a time: a balancer's epoch file, a play server's unfinished matches and
  # every address of the plan belong to one process.
  strategy:
    type: Recreate
  selector:
    matchLabels:
{labels6}
  template:
    metadata:
      labels:
{labels8}
      annotations:
        prometheus.io/scrape: \"true\"
        prometheus.io/port: \"{metrics}\"
        prometheus.io/path: /metrics
    spec:
      terminationGracePeriodSeconds: {grace_s}
      containers:
        - name: {name}
          image: {IMAGE}
          imagePullPolicy: Never
          args: {serve}
          ports:
            - name: {port_name}
              containerPort: {port}
            - name: {METRICS_PORT_NAME}
              containerPort: {metrics}
{env}          readinessProbe:
{action}
            periodSeconds: {READY_PERIOD_S}
            failureThreshold: {READY_FAILURES}
          livenessProbe:
{action}
            periodSeconds: {LIVE_PERIOD_S}
            failureThreshold: {LIVE_FAILURES}
{mounts}{volumes}",
        object = object_name(name),
        labels4 = labels(name, 4),
        labels6 = labels(name, 6),
        labels8 = labels(name, 8),
        grace_s = SHUTDOWN_GRACE_MS / 1_000,
        port_name = protocol.port_name(),
        action = protocol.probe_action(port, 12),
        mounts = mounts(true),
        volumes = volumes(),
    );
}

/// A YAML flow sequence of strings, for a container's `args`.
fn args(args: &[&str]) -> String {
    let quoted: Vec<String> = args
        .iter()
        .map(|a| serde_json::to_string(a).expect("strings serialize"))
        .collect();
    format!("[{}]", quoted.join(", "))
}

/// A play server's environment: its observers listen on the pod's address.
fn observer_env() -> String {
    format!(
        "          env:
            - name: POD_IP
              valueFrom:
                fieldRef:
                  fieldPath: status.podIP
            - name: {OBSERVER_LISTEN_ENV}
              value: \"$(POD_IP):0\"
"
    )
}

/// A container's mounts: the data folder, and the plan if `with_plan`.
fn mounts(with_plan: bool) -> String {
    let mut m = format!(
        "          volumeMounts:\n            - name: data\n              mountPath: {DATA_MOUNT}\n"
    );
    if with_plan {
        let _ = writeln!(
            m,
            "            - name: plan\n              mountPath: {PLAN_MOUNT}\n              readOnly: true"
        );
    }
    m
}

/// A pod's volumes: the data folder's claim and the plan's ConfigMap.
fn volumes() -> String {
    format!(
        "      volumes:
        - name: data
          persistentVolumeClaim:
            claimName: {DATA_VOLUME}
        - name: plan
          configMap:
            name: {PLAN_CONFIG_MAP}
"
    )
}

fn plan_path() -> String {
    Path::new(PLAN_MOUNT).join(PLAN_FILE).display().to_string()
}

/// `text` with every line indented by `spaces`, for a YAML block scalar.
fn indent(text: &str, spaces: usize) -> String {
    let pad = " ".repeat(spaces);
    text.lines()
        .map(|line| format!("{pad}{line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_plan() -> Plan {
        plan(Settings::default(), 7100, SERVICE_IP_FIRST_DEFAULT).unwrap()
    }

    #[test]
    fn the_committed_manifests_are_the_ones_the_default_plan_writes() {
        let [(data_name, data), (services_name, services)] = manifests(&default_plan());
        let committed = [
            (
                data_name,
                include_str!("../../../deploy/kubernetes/data.yaml"),
            ),
            (
                services_name,
                include_str!("../../../deploy/kubernetes/services.yaml"),
            ),
        ];
        for ((name, committed), generated) in committed.into_iter().zip([data, services]) {
            assert_eq!(
                committed, generated,
                "{name}: regenerate it: catwar-server kubernetes manifests --out deploy/kubernetes"
            );
        }
    }

    #[test]
    fn each_service_is_at_its_own_cluster_ip_and_its_pod_listens_on_every_address() {
        let plan = default_plan();
        let services = services_manifest(&plan);
        for s in &plan.services {
            assert!(
                s.public.is_none(),
                "clients in the cluster reach the plan address"
            );
            assert!(services.contains(&format!("clusterIP: {}\n", s.addr.ip())));
            let listen = format!(
                "\"--listen\", \"0.0.0.0:{}\", \"--metrics-listen\", \"0.0.0.0:{}\"]",
                s.addr.port(),
                s.metrics.port()
            );
            assert!(
                services.contains(&listen),
                "{} listens on its ports",
                s.name
            );
            let annotation = format!("prometheus.io/port: \"{}\"\n", s.metrics.port());
            assert!(services.contains(&annotation), "{} is scraped", s.name);
        }
        assert_eq!(
            plan.addr_of("storage").unwrap(),
            "10.96.0.205:7100".parse().unwrap()
        );
        assert_eq!(plan.data_dir, Path::new(DATA_MOUNT));
        assert_eq!(plan.settings.observer_backend, ObserverBackend::Process);
    }

    #[test]
    fn the_plan_in_the_config_map_is_the_plan() {
        let plan = default_plan();
        let data = data_manifest(&plan);
        let start = data.find("  plan.json: |\n").unwrap() + "  plan.json: |\n".len();
        let end = start + data[start..].find("\n---\n").unwrap();
        let json: String = data[start..end].lines().map(|l| &l[4..]).collect();
        let read: Plan = serde_json::from_str(&json).unwrap();
        assert_eq!(read.services, plan.services);
    }

    #[test]
    fn addresses_past_the_last_one_are_refused() {
        let err = plan(Settings::default(), 7100, Ipv4Addr::new(255, 255, 255, 250)).unwrap_err();
        assert!(
            matches!(err, TopologyError::AddressRange { services: 11, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn the_simulator_manifests_use_what_the_server_manifests_create() {
        let sim = include_str!("../../../deploy/kubernetes/sim.yaml");
        assert!(sim.contains(&format!("namespace: {NAMESPACE}\n")));
        assert!(sim.contains(&format!("image: {IMAGE}\n")));
        assert!(sim.contains(&format!("claimName: {DATA_VOLUME}\n")));
        let target = format!("\"--target\", \"{DATA_MOUNT}/topology.json\"");
        assert!(sim.contains(&target), "the coordinator reads {target}");
        let seeded = format!("users = {SEED_USERS}");
        assert!(
            sim.contains(&seeded),
            "the scenario draws from the seeded users"
        );
        let settings = Settings::default();
        let token_idle = format!("token_idle_s = {}\n", settings.token_idle_s);
        assert!(
            sim.contains(&token_idle),
            "the scenario records the plan's settings"
        );
    }
}

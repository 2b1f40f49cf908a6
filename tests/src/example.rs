//! The bundled example systems (examples/shop/README.md): fi-shop services in lab
//! containers, and the functional test that an exploration runs.

use std::path::PathBuf;

use crate::{Container, Daemon, Lab, net::Guard, process::bin_path};

/// The port every example service listens on.
pub const PORT: u16 = 8080;

/// A service of an example: its container and its process.
#[derive(Debug)]
pub struct Service {
    pub container: Container,
    _process: Guard,
}

impl Service {
    /// Starts `fi-shop --name NAME` in a new container with index `n`, with these calls.
    fn start(lab: &Lab, name: &str, n: u8, calls: &[String]) -> Service {
        let container = lab.container(name, n);
        let listen = format!("{}:{PORT}", container.ipv4);
        let mut args = vec!["--name", name, "--listen", &listen];
        for call in calls {
            args.push("--call");
            args.push(call);
        }
        let shop = bin_path("fi-shop");
        let shop = shop.to_str().expect("binary path is UTF-8");
        let process = container.spawn(shop, &args);
        container.wait_for_listener(PORT);
        Service {
            container,
            _process: process,
        }
    }

    pub fn url(&self) -> String {
        format!("{}:{PORT}", self.container.ipv4)
    }

    /// The cgroup path relative to the cgroup2 mount: what `--target` takes.
    pub fn target(&self) -> String {
        let mount = crate::net::cgroup2_mount();
        self.container
            .cgroup
            .strip_prefix(&mount)
            .map(|p| format!("/{}", p.display()))
            .unwrap_or_else(|_| self.container.cgroup.display().to_string())
    }
}

/// An example system: its services and the container the test runs in.
#[derive(Debug)]
pub struct Example {
    pub services: Vec<Service>,
    /// Where the functional test runs (a container of its own, so that its requests
    /// leave through a veth the daemon watches).
    pub client: Container,
}

fn call(name: &str, method: &str, to: &Service, path: &str, options: &str) -> String {
    format!("{name} {method} http://{}{path} {options}", to.url())
}

impl Example {
    /// The shop (examples/shop/README.md): the test posts a checkout to `frontend`, which
    /// asks `recommend` (fallback: none), `inventory` (which asks `warehouse`; no
    /// fallback), then charges `payments` (retried once), and the test checks that the
    /// order was charged exactly once.
    pub fn shop(lab: &Lab) -> Example {
        let recommend = Service::start(lab, "recommend", 2, &[]);
        let payments = Service::start(lab, "payments", 3, &[]);
        let warehouse = Service::start(lab, "warehouse", 5, &[]);
        let inventory = Service::start(
            lab,
            "inventory",
            4,
            &[call(
                "warehouse",
                "GET",
                &warehouse,
                "/level/42",
                "on-error=fail",
            )],
        );
        let frontend = Service::start(
            lab,
            "frontend",
            1,
            &[
                call("recommend", "GET", &recommend, "/recs", "on-error=fallback"),
                call(
                    "inventory",
                    "GET",
                    &inventory,
                    "/stock/42",
                    "on-error=fail timeout-ms=1500",
                ),
                call(
                    "payments",
                    "POST",
                    &payments,
                    "/charge",
                    "retries=1 on-error=fail",
                ),
            ],
        );
        let client = lab.container("client", 10);
        Example {
            services: vec![frontend, recommend, payments, inventory, warehouse],
            client,
        }
    }

    /// A deeper chain for reduction: test -> gateway -> orders -> stock (retried once),
    /// and the gateway falls back to `cache` when orders fails.
    pub fn deep(lab: &Lab) -> Example {
        let stock = Service::start(lab, "stock", 4, &[]);
        let cache = Service::start(lab, "cache", 5, &[]);
        let orders = Service::start(
            lab,
            "orders",
            3,
            &[call(
                "stock",
                "GET",
                &stock,
                "/stock",
                "retries=1 on-error=fail",
            )],
        );
        let gateway = Service::start(
            lab,
            "gateway",
            1,
            &[
                call(
                    "orders",
                    "GET",
                    &orders,
                    "/orders",
                    "on-error=fallback timeout-ms=1500",
                ),
                call(
                    "cache",
                    "GET",
                    &cache,
                    "/cache",
                    "when-failed=orders on-error=fail",
                ),
            ],
        );
        let client = lab.container("client", 10);
        Example {
            services: vec![gateway, orders, stock, cache],
            client,
        }
    }

    /// A daemon that follows the lab's veths, once it is attached to this example's.
    pub fn daemon(&self, lab: &Lab, extra: &[String]) -> Daemon {
        let mut args = vec![
            "--iface=".to_owned(),
            format!("--veth-prefix=fv{}", lab.id()),
        ];
        args.extend_from_slice(extra);
        let daemon = Daemon::start_with(lab.id(), lab.cgroup(), &args);
        let veths: Vec<&str> = self
            .services
            .iter()
            .map(|s| s.container.host_veth.as_str())
            .chain([self.client.host_veth.as_str()])
            .collect();
        daemon.wait_attached(&veths);
        daemon
    }

    pub fn service(&self, name: &str) -> &Service {
        self.services
            .iter()
            .find(|s| s.container.name == name)
            .unwrap_or_else(|| panic!("no service {name}"))
    }

    /// `--target` arguments for every service.
    pub fn target_args(&self) -> Vec<String> {
        self.services
            .iter()
            .flat_map(|s| ["--target".to_owned(), s.target()])
            .collect()
    }

    /// Runs `command` in the client container's network namespace (nsenter keeps the
    /// cgroup the daemon put the test in).
    pub fn in_client(&self, command: &str) -> String {
        format!("nsenter --net=/run/netns/{} {command}", self.client.netns)
    }

    /// The shop's functional test, as an exploration runs it.
    pub fn shop_test(&self) -> String {
        self.in_client(&format!(
            "python3 {} {} {}",
            example_file("shop/functional_test.py").display(),
            self.service("frontend").url(),
            self.service("payments").url()
        ))
    }

    /// The shop's functional test in Rust, with the fi-testing crate (one checkout).
    pub fn shop_test_rust(&self) -> String {
        self.in_client(&format!(
            "{} {}",
            bin_path("fi-shop-test").display(),
            self.service("frontend").url()
        ))
    }

    /// The deep example's test: the page must load.
    pub fn deep_test(&self) -> String {
        self.in_client(&format!(
            "curl -sS -f -m 5 -o /dev/null http://{}/page",
            self.service("gateway").url()
        ))
    }
}

/// A file of examples/ in the repository.
pub fn example_file(name: &str) -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name)
}

//! The incident timeline: what is wrong with the platform at each moment of a scenario.

use clap::ValueEnum;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Every incident, one after another: payment outage with its breaker, a degraded
    /// order-service instance, the inventory consumer lagging, /v1 → /v2 traffic shift.
    Full,
    /// A healthy platform.
    Steady,
    /// Only the payment outage: slow, then failing, then recovered.
    PaymentOutage,
}

/// Conditions at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Conditions {
    /// Multiplies payment-service latency.
    pub payment_slowdown: f64,
    /// Share of payment calls that fail.
    pub payment_error_rate: f64,
    /// The order-service instance (index) that is degraded, if any.
    pub degraded_order_instance: Option<usize>,
    /// Share of orders sent to `/v2/orders` instead of `/v1/orders`.
    pub v2_share: f64,
    /// Extra time order events wait in Kafka before inventory-service takes them.
    pub inventory_lag_ns: u64,
}

/// An incident and the part of the scenario it spans, as fractions of its length.
#[derive(Debug, Clone, Copy)]
pub struct Incident {
    pub name: &'static str,
    pub from: f64,
    pub to: f64,
}

const PAYMENT_SLOW: Incident = Incident {
    name: "payment-service slow",
    from: 0.15,
    to: 0.45,
};
const PAYMENT_FAILING: Incident = Incident {
    name: "payment-service failing",
    from: 0.30,
    to: 0.45,
};
const ORDER_INSTANCE_DEGRADED: Incident = Incident {
    name: "order-service-2 degraded",
    from: 0.50,
    to: 0.70,
};
const INVENTORY_LAG: Incident = Incident {
    name: "inventory-service consumer lagging",
    from: 0.60,
    to: 0.80,
};

impl Scenario {
    pub fn incidents(self) -> &'static [Incident] {
        match self {
            Self::Full => &[
                PAYMENT_SLOW,
                PAYMENT_FAILING,
                ORDER_INSTANCE_DEGRADED,
                INVENTORY_LAG,
            ],
            Self::Steady => &[],
            Self::PaymentOutage => &[PAYMENT_SLOW, PAYMENT_FAILING],
        }
    }

    /// The conditions at `progress` (0.0 at the start, 1.0 at the end of the scenario).
    pub fn conditions(self, progress: f64) -> Conditions {
        let during = |incident: &Incident| {
            self.incidents().iter().any(|i| i.name == incident.name)
                && progress >= incident.from
                && progress < incident.to
        };
        let lag_fraction = if during(&INVENTORY_LAG) {
            (progress - INVENTORY_LAG.from) / (INVENTORY_LAG.to - INVENTORY_LAG.from)
        } else {
            0.0
        };
        Conditions {
            payment_slowdown: if during(&PAYMENT_SLOW) { 8.0 } else { 1.0 },
            payment_error_rate: if during(&PAYMENT_FAILING) { 0.8 } else { 0.002 },
            degraded_order_instance: during(&ORDER_INSTANCE_DEGRADED).then_some(2),
            v2_share: match self {
                Self::Full => 0.1 + 0.8 * progress.clamp(0.0, 1.0),
                Self::Steady | Self::PaymentOutage => 0.5,
            },
            inventory_lag_ns: (lag_fraction * 20e9) as u64,
        }
    }
}

//! The dashboard in a real browser (headless Chromium through the DevTools protocol): the
//! demo's full scenario replayed, every page loaded and checked against its ground truth,
//! graph → edge → trace clicked through, no console errors, hostile names kept as text,
//! and a screenshot of every page saved.

use std::collections::HashMap;

use callwatch_collector::text_attribute as text;
use serde_json::Value;

use crate::breakers::{breakers_when, write_config};
use crate::common::Server;
use crate::common::browser::{Tab, chromium, launch, screenshot_dir};
use crate::common::requests::now_ns;
use crate::common::samples::sample;
use crate::graph::{CLIENT, MS, SERVER, span, window};

/// A service and an operation named to run script if the page did not escape them.
const HOSTILE_SERVICE: &str = "<script>window.__xss=1</script>";
const HOSTILE_PEER: &str = "<img src=x onerror=\"window.__xss=2\">";

/// Spans of a service and a peer whose names are HTML.
async fn post_hostile_spans(server: &Server) {
    let start = now_ns() - 30_000 * MS;
    let trace = 0xd0_u128 << 120 | 1;
    let mut client = span(
        trace,
        1,
        None,
        CLIENT,
        start,
        4 * MS,
        vec![text("peer.service", HOSTILE_PEER)],
    );
    client.name = HOSTILE_PEER.into();
    let mut root = span(trace, 3, None, SERVER, start - MS, 8 * MS, vec![]);
    root.name = HOSTILE_SERVICE.into();
    client.parent_span_id = 3u64.to_be_bytes().to_vec();
    server.post_spans(HOSTILE_SERVICE, vec![root, client]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_works_in_a_browser_with_the_demo_scenario() {
    let Some(chromium) = chromium() else {
        return;
    };
    let file = sample("full");
    let truth: Value =
        serde_json::from_str(&std::fs::read_to_string(file.with_extension("truth.json")).unwrap())
            .unwrap();
    let expected_breaker = &truth["breakers"][0];
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &expected_breaker["config"], None);
    let server = Server::start(
        &dir.path().join("data"),
        &["--pairing-wait", "1s", "--config", config.to_str().unwrap()],
    );
    let replayed_ms = now_ns() / MS;
    server.replay(&file);
    let transitions = expected_breaker["transitions"].as_array().unwrap().len();
    breakers_when(&server, |b| {
        b["breakers"].as_array().unwrap().iter().any(|b| {
            b["client"] == "order-service"
                && b["server"] == "payment-service"
                && b["inferred_transitions"].as_array().unwrap().len() == transitions
        })
    })
    .await;

    let (mut browser, events) = launch(chromium, dir.path()).await;
    let tab = Tab::open(&browser, format!("http://{}", server.http)).await;
    // The recording runs from now into the future: look at the hour either side.
    let range = format!("{}&refresh=off", window());

    // The README's pictures, of the demo's scenario alone over the 160 s it lasts: the map,
    // and the payment edge through its outage.
    let recording = format!(
        "from={}&to={}&refresh=off",
        replayed_ms - 5_000,
        replayed_ms + 165_000
    );
    tab.visit(&format!("/graph?{recording}")).await;
    // Centred on order-service, where the outage is, at the default zoom.
    tab.eval(
        "(() => { const find = document.querySelector('.map-tools input.find'); \
         find.value = 'order-service'; find.dispatchEvent(new Event('change')); \
         document.querySelector('.map-frame').dispatchEvent(new KeyboardEvent('keydown', { key: 'Escape' })); })()",
    )
    .await;
    tab.screenshot_view("readme-map").await;
    tab.visit(&format!(
        "/edges?source=order-service&target=payment-service&{recording}"
    ))
    .await;
    tab.screenshot_view("readme-edge").await;
    post_hostile_spans(&server).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while crate::graph::get(&server, &format!("/api/v1/graph?{range}")).await["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["id"] == HOSTILE_SERVICE || n["id"] == HOSTILE_PEER)
        .count()
        < 2
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the hostile spans never arrived"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let services: Vec<&str> = truth["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["kind"] == "service")
        .map(|n| n["id"].as_str().unwrap())
        .collect();

    // Overview: every service of the truth, and the hostile one as text.
    tab.visit(&format!("/?{range}")).await;
    let mut listed = tab
        .attributes("table.services tr[data-service]", "data-service")
        .await;
    listed.retain(|s| s != HOSTILE_SERVICE);
    let mut want: Vec<String> = services.iter().map(|s| s.to_string()).collect();
    want.sort();
    listed.sort();
    assert_eq!(listed, want, "services on the overview");
    assert!(
        tab.texts("table.services td a")
            .await
            .iter()
            .any(|t| t == HOSTILE_SERVICE),
        "a hostile service name is shown as text"
    );
    tab.screenshot("overview").await;

    // Service map: every node with its kind, every edge, clickable.
    tab.visit(&format!("/graph?{range}")).await;
    for node in truth["nodes"].as_array().unwrap() {
        let selector = format!(
            "svg.map a.node.{}[data-node={}]",
            node["kind"].as_str().unwrap(),
            node["id"]
        );
        assert_eq!(tab.texts(&selector).await.len(), 1, "{selector}");
    }
    let drawn = tab.attributes("svg.map a.edge", "data-edge").await;
    for edge in truth["edges"].as_array().unwrap() {
        let prefix = format!(
            "{} → {} ({}",
            edge["source"].as_str().unwrap(),
            edge["target"].as_str().unwrap(),
            edge["call_type"].as_str().unwrap()
        );
        assert!(
            drawn.iter().any(|d| d.starts_with(&prefix)),
            "{prefix} in {drawn:?}"
        );
    }
    assert!(
        tab.texts("svg.map a.node text")
            .await
            .iter()
            .any(|t| t == HOSTILE_PEER),
        "a hostile peer name is shown as text"
    );
    // A hexagon per topic or queue, between its producers and its consumers.
    let drawn_links = tab
        .pairs(
            "(() => { const name = i => { \
               const node = document.querySelector(`svg.map a.node[data-index='${i}']`); \
               return node.dataset.node + (node.classList.contains('topic') ? ' (topic)' : ''); }; \
             return Array.from(document.querySelectorAll('svg.map a.edge'), \
               e => [name(e.dataset.from), name(e.dataset.to)]); })()",
        )
        .await;
    let mut topics: Vec<&str> = truth["edges"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["destination"].as_str())
        .collect();
    topics.sort();
    topics.dedup();
    let mut hexagons = tab.attributes("svg.map a.node.topic", "data-node").await;
    hexagons.sort();
    assert_eq!(hexagons, topics);
    for edge in truth["edges"].as_array().unwrap() {
        let Some(topic) = edge["destination"].as_str() else {
            continue;
        };
        let hexagon = format!("{topic} (topic)");
        let (producer, consumer) = (
            edge["source"].as_str().unwrap(),
            edge["target"].as_str().unwrap(),
        );
        for link in [(producer, hexagon.as_str()), (hexagon.as_str(), consumer)] {
            assert_eq!(
                drawn_links
                    .iter()
                    .filter(|(a, b)| (a.as_str(), b.as_str()) == link)
                    .count(),
                1,
                "{link:?} in {drawn_links:?}"
            );
        }
        assert!(
            !drawn_links
                .iter()
                .any(|(a, b)| a == producer && b == consumer),
            "{producer} → {consumer} goes through {topic}"
        );
    }
    tab.screenshot("graph").await;

    // Grouped by namespace: one box per namespace its services report, edges between boxes;
    // a namespace opened again shows its services inside a frame named after it.
    let graph = crate::graph::get(&server, &format!("/api/v1/graph?{range}")).await;
    let namespace_of: HashMap<String, String> = graph["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| {
            Some((
                n["id"].as_str()?.to_string(),
                n["namespace"].as_str()?.to_string(),
            ))
        })
        .collect();
    assert_eq!(namespace_of["order-service"], "shop");
    // The consumer group the inventory consumer reads order-events as, on its edge and on
    // the topic's hexagon.
    let consumed = crate::graph::edge(&graph, "order-service", "inventory-service");
    assert_eq!(
        consumed["consumer_groups"],
        serde_json::json!(["inventory"])
    );
    // Its lag as spans tell it: messages waiting on average; none for a sync call.
    assert!(
        consumed["queued_messages"].as_f64().unwrap() > 0.0,
        "{consumed}"
    );
    let sync = crate::graph::edge(&graph, "order-service", "payment-service");
    assert!(sync["queued_messages"].is_null(), "{sync}");
    let hexagon_title = tab
        .texts("svg.map a.node.topic[data-node='order-events'] title")
        .await
        .join(" ");
    assert!(
        hexagon_title.contains("read by inventory-service (group inventory)"),
        "{hexagon_title}"
    );
    assert_eq!(namespace_of["payment-service"], "payments");
    let mut namespaces: Vec<&String> = namespace_of.values().collect();
    namespaces.sort();
    namespaces.dedup();
    tab.visit(&format!("/graph?{range}&group=namespace")).await;
    let mut boxes = tab
        .attributes("svg.map a.node.namespace", "data-node")
        .await;
    boxes.sort();
    assert_eq!(boxes.iter().collect::<Vec<_>>(), namespaces);
    for service in namespace_of.keys() {
        let selector = format!("svg.map a.node.service[data-node=\"{service}\"]");
        assert!(tab.texts(&selector).await.is_empty(), "{service} is folded");
    }
    let grouped_links = tab
        .pairs(
            "Array.from(document.querySelectorAll('svg.map a.edge'), e => [\
               document.querySelector(`svg.map a.node[data-index='${e.dataset.from}']`).dataset.node, \
               document.querySelector(`svg.map a.node[data-index='${e.dataset.to}']`).dataset.node])",
        )
        .await;
    assert_eq!(
        grouped_links
            .iter()
            .filter(|(a, b)| a == "shop" && b == "payments")
            .count(),
        1,
        "one edge from shop to payments in {grouped_links:?}"
    );
    assert!(
        !grouped_links.iter().any(|(a, b)| a == b),
        "{grouped_links:?}"
    );
    tab.visit(&format!("/graph?{range}&group=namespace&expand=shop"))
        .await;
    let inside = tab
        .eval(
            "(() => { const frame = document.querySelector('svg.map g.ns-frame[data-namespace=\"shop\"] rect').getBBox(); \
               const node = document.querySelector('svg.map a.node[data-node=\"order-service\"]').getBBox(); \
               return node.x >= frame.x && node.y >= frame.y && node.x + node.width <= frame.x + frame.width \
                 && node.y + node.height <= frame.y + frame.height; })()",
        )
        .await;
    assert_eq!(
        inside,
        serde_json::json!(true),
        "order-service inside the shop frame"
    );
    assert!(
        tab.attributes("svg.map a.node.namespace", "data-node")
            .await
            .contains(&"payments".to_string())
    );
    tab.screenshot("graph-by-namespace").await;

    // graph → edge → trace: find order-service, which centres it, and click its edge.
    tab.eval(
        "(() => { const find = document.querySelector('.map-tools input.find'); \
         find.value = 'order-service'; find.dispatchEvent(new Event('change')); })()",
    )
    .await;
    tab.page
        .find_element("svg.map a.edge[data-edge^='order-service → payment-service'] text")
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    tab.wait_for_path("/edges?").await;
    let heading = tab.texts("h1").await.join(" ");
    assert!(
        heading.contains("order-service") && heading.contains("payment-service"),
        "{heading}"
    );
    assert_eq!(
        tab.attributes("table.breakers tr[data-breaker]", "data-breaker")
            .await,
        ["order-service → payment-service"]
    );
    assert!(!tab.texts("table.latency td.num").await.is_empty());
    tab.screenshot("edge").await;
    let trace_links = tab.attributes("a.trace-link", "href").await;
    assert!(!trace_links.is_empty(), "the edge lists example traces");
    tab.page
        .find_element("a.trace-link")
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    tab.wait_for_path("/traces/").await;
    let spans = tab.texts(".waterfall details.span summary .label b").await;
    assert!(
        spans.iter().any(|s| s == "order-service") && spans.iter().any(|s| s == "payment-service"),
        "the trace holds both sides of the call: {spans:?}"
    );
    // One colour per service, a different one for each, and a legend that says which.
    let colours = tab
        .pairs(
            "Array.from(document.querySelectorAll('.waterfall details.span summary'), s => \
             [s.querySelector('.label b').textContent, \
              getComputedStyle(s.querySelector('.bar')).backgroundColor])",
        )
        .await;
    let mut by_service: std::collections::BTreeMap<&str, std::collections::BTreeSet<&str>> =
        Default::default();
    for (service, colour) in &colours {
        by_service.entry(service).or_default().insert(colour);
    }
    assert!(by_service.values().all(|c| c.len() == 1), "{by_service:?}");
    let distinct: std::collections::BTreeSet<_> = by_service.values().flatten().collect();
    assert_eq!(distinct.len(), by_service.len(), "{by_service:?}");
    let legend = tab.texts("p.legend.services").await.join(" ");
    assert!(by_service.keys().all(|s| legend.contains(s)), "{legend}");
    assert_eq!(tab.texts(".waterfall .axis-row .tick").await.len(), 5);
    tab.screenshot("trace").await;

    // A service page: operations, instances and versions.
    tab.visit(&format!("/services/order-service?{range}")).await;
    assert_eq!(tab.texts("table.shares").await.len(), 3);
    assert!(tab.texts("figure.chart").await.len() >= 2);
    tab.screenshot("service").await;

    // Breakers: the payment breaker with its inferred transitions on the timeline.
    tab.visit(&format!("/breakers?{range}")).await;
    let row = "table.breakers tr[data-breaker='order-service → payment-service']";
    assert_eq!(tab.texts(row).await.len(), 1);
    assert!(
        !tab.texts(&format!("{row} svg.timeline rect.state.open"))
            .await
            .is_empty(),
        "the timeline shows the breaker open"
    );
    // The window starts an hour before the first call: no data there, not "closed".
    let first_states = tab
        .eval(&format!(
            "Array.from(document.querySelectorAll(\"{row} svg.timeline\"), t => t.querySelector('rect.state').getAttribute('class'))"
        ))
        .await;
    assert!(
        first_states
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c == "state no_data"),
        "{first_states}"
    );
    tab.screenshot("breakers").await;

    // Traces: the latest without a search, each a dot on the scatter plot; a search finds
    // traces of order-service.
    tab.visit(&format!("/traces?{range}")).await;
    let listed = tab.texts("table.traces a.trace-link").await.len();
    assert!(listed > 0, "the latest traces are listed without a search");
    assert_eq!(tab.texts("figure.chart a.dot").await.len(), listed);
    let offered = tab.texts("form.search select[name=service] option").await;
    assert!(offered.iter().any(|s| s == "order-service"), "{offered:?}");
    tab.screenshot("traces-latest").await;
    tab.visit(&format!("/traces?service=order-service&search=1&{range}"))
        .await;
    assert!(!tab.texts("table.traces a.trace-link").await.is_empty());
    tab.screenshot("traces").await;

    // SQL: a table and the CSV download.
    tab.visit("/sql?q=SELECT%20count(*)%20AS%20spans%20FROM%20spans")
        .await;
    assert_eq!(tab.texts("table.result th").await, ["spans"]);
    let csv_href = tab.attributes("a.csv", "href").await;
    let csv = reqwest::get(format!("http://{}{}", server.http, csv_href[0]))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(csv.starts_with("spans\n"), "{csv}");
    assert_eq!(
        csv.lines().nth(1),
        tab.texts("table.result td")
            .await
            .first()
            .map(String::as_str)
    );
    tab.screenshot("sql").await;

    // The hostile service's own page, and nothing ran.
    tab.visit(&format!(
        "/services/{}?{range}",
        crate::common::requests::url_component(HOSTILE_SERVICE)
    ))
    .await;
    assert!(tab.texts("h1").await[0].starts_with(HOSTILE_SERVICE));
    assert_eq!(tab.eval("typeof window.__xss").await, "undefined");

    assert_eq!(tab.errors(), Vec::<String>::new(), "console errors");
    browser.close().await.unwrap();
    events.abort();
    eprintln!("screenshots in {}", screenshot_dir().display());
    server.stop();
}

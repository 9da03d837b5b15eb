//! The service map at a real platform's size, in headless Chromium: a generated platform of
//! 200 services sent over OTLP/gRPC, every node and edge drawn, names readable at default
//! zoom, the view moved by a real mouse and keyboard, and focus fading exactly what lies
//! outside a node's neighbourhood.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use chromiumoxide::cdp::browser_protocol::input::{
    DispatchMouseEventParams, DispatchMouseEventType, MouseButton,
};
use serde_json::Value;

use crate::common::browser::{Tab, chromium, launch};
use crate::common::{Server, callwatch};
use crate::graph::get;

const SERVICES: usize = 200;

/// The graph once it has stopped growing: pairing settles a second after the last span.
async fn settled_graph(server: &Server, range: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = 0;
    loop {
        let graph = get(server, &format!("/api/v1/graph?{range}")).await;
        let edges = graph["edges"].as_array().unwrap().len();
        if edges == last && edges >= 3 * SERVICES - 30 {
            return graph;
        }
        assert!(
            Instant::now() < deadline,
            "the graph never settled: {edges} edges"
        );
        last = edges;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// The nodes within `depth` calls of `start`, downstream and upstream.
fn neighbourhood(edges: &[(String, String)], start: &str, depth: usize) -> BTreeSet<String> {
    let mut found = BTreeSet::from([start.to_string()]);
    for downstream in [true, false] {
        let mut frontier = vec![start.to_string()];
        for _ in 0..depth {
            let mut next = Vec::new();
            for (source, target) in edges {
                let (from, to) = if downstream {
                    (source, target)
                } else {
                    (target, source)
                };
                if frontier.contains(from) && found.insert(to.clone()) {
                    next.push(to.clone());
                }
            }
            frontier = next;
        }
    }
    found
}

/// Nodes the map shows as not faded.
async fn unfaded(tab: &Tab) -> BTreeSet<String> {
    tab.attributes("svg.map a.node:not(.faded)", "data-node")
        .await
        .into_iter()
        .collect()
}

async fn view_transform(tab: &Tab) -> String {
    tab.attributes("svg.map g.view", "transform").await[0].clone()
}

/// The smallest on-screen font size, in px, of the texts `selector` matches: the CSS size
/// times the scale the map is drawn at.
async fn smallest_font(tab: &Tab, selector: &str) -> f64 {
    tab.eval(&format!(
        "Math.min(...Array.from(document.querySelectorAll({}), t => \
         parseFloat(getComputedStyle(t).fontSize) * t.getScreenCTM().a))",
        serde_json::to_string(selector).unwrap()
    ))
    .await
    .as_f64()
    .unwrap()
}

/// The middle of the map's frame, in page pixels.
async fn frame_centre(tab: &Tab) -> (f64, f64) {
    let centre = tab
        .eval(
            "(() => { const r = document.querySelector('.map-frame').getBoundingClientRect(); \
             return [r.left + r.width / 2, r.top + r.height / 2]; })()",
        )
        .await;
    (centre[0].as_f64().unwrap(), centre[1].as_f64().unwrap())
}

async fn mouse(tab: &Tab, kind: DispatchMouseEventType, x: f64, y: f64) {
    let mut event = DispatchMouseEventParams::new(kind, x, y);
    event.button = Some(MouseButton::Left);
    event.buttons = Some(1);
    event.click_count = Some(1);
    tab.page.execute(event).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_map_of_200_services_is_readable_moves_and_focuses() {
    let Some(chromium) = chromium() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &["--pairing-wait", "1s"]);
    callwatch(&[
        "load",
        "--send-to",
        &server.grpc_url(),
        "--services",
        &SERVICES.to_string(),
        "--duration",
        "10s",
        "--connections",
        "2",
        "--batch",
        "500",
    ]);
    let range = "range=15m&refresh=off";
    let graph = settled_graph(&server, range).await;
    let names: BTreeSet<String> = graph["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_string())
        .collect();
    let edges: Vec<(String, String)> = graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["source"].as_str().unwrap().to_string(),
                e["target"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    // Every service, and `user`.
    assert_eq!(names.len(), SERVICES + 1, "{names:?}");

    let (mut browser, events) = launch(chromium, dir.path()).await;
    let tab = Tab::open(&browser, format!("http://{}", server.http)).await;
    tab.visit(&format!("/graph?{range}")).await;

    // Every node and edge is drawn, each edge between the nodes it joins.
    let drawn: BTreeSet<String> = tab
        .attributes("svg.map a.node", "data-node")
        .await
        .into_iter()
        .collect();
    assert_eq!(drawn, names);
    let label_of: HashMap<String, String> = tab
        .eval(
            "Object.fromEntries(Array.from(document.querySelectorAll('svg.map a.node'), \
             n => [n.dataset.index, n.dataset.node]))",
        )
        .await
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    let mut drawn_edges: Vec<(String, String)> = tab
        .eval(
            "Array.from(document.querySelectorAll('svg.map a.edge'), \
             e => [e.dataset.from, e.dataset.to])",
        )
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| {
            let end = |i: usize| label_of[pair[i].as_str().unwrap()].clone();
            (end(0), end(1))
        })
        .collect();
    let mut want = edges.clone();
    want.sort();
    drawn_edges.sort();
    assert_eq!(drawn_edges, want);

    // Readable at default zoom, however many services.
    let names_px = smallest_font(&tab, "svg.map a.node text.name").await;
    assert!(names_px >= 12.0, "node names at {names_px} px");
    let labels_px = smallest_font(&tab, "svg.map a.edge text.label").await;
    assert!(labels_px >= 10.0, "edge labels at {labels_px} px");
    tab.screenshot("map-200-services").await;

    // Zoom with the wheel and the keyboard, pan by dragging.
    let (cx, cy) = frame_centre(&tab).await;
    let before = view_transform(&tab).await;
    let mut wheel = DispatchMouseEventParams::new(DispatchMouseEventType::MouseWheel, cx, cy);
    wheel.delta_x = Some(0.0);
    wheel.delta_y = Some(400.0);
    tab.page.execute(wheel).await.unwrap();
    let zoomed = view_transform(&tab).await;
    assert!(zoomed.contains("scale(0.5"), "{before} → {zoomed}");
    tab.eval("document.querySelector('.map-frame').focus()")
        .await;
    tab.page
        .find_element(".map-frame")
        .await
        .unwrap()
        .press_key("+")
        .await
        .unwrap();
    let keyed = view_transform(&tab).await;
    assert_ne!(keyed, zoomed, "+ zooms in");
    mouse(&tab, DispatchMouseEventType::MousePressed, cx, cy).await;
    for step in 1..=5 {
        let at = step as f64 * 30.0;
        mouse(
            &tab,
            DispatchMouseEventType::MouseMoved,
            cx + at,
            cy + at / 2.0,
        )
        .await;
    }
    mouse(
        &tab,
        DispatchMouseEventType::MouseReleased,
        cx + 150.0,
        cy + 75.0,
    )
    .await;
    let panned = view_transform(&tab).await;
    assert_ne!(panned, keyed, "dragging pans");
    assert!(
        panned.ends_with(&keyed[keyed.find("scale").unwrap()..]),
        "{panned}"
    );
    // Dragging over the map followed no link.
    assert!(tab.path().await.starts_with("/graph"));

    // Focus from a link, then by finding a node and clicking it.
    let focused = "svc-100";
    tab.visit(&format!("/graph?{range}&focus={focused}&depth=1"))
        .await;
    assert_eq!(unfaded(&tab).await, neighbourhood(&edges, focused, 1));
    let other = "svc-050";
    tab.eval(&format!(
        "(() => {{ const find = document.querySelector('.map-tools input.find'); \
         find.value = '{other}'; find.dispatchEvent(new Event('change')); }})()"
    ))
    .await;
    assert_eq!(unfaded(&tab).await, neighbourhood(&edges, other, 1));
    // The node found is centred: a real click at the centre focuses it again (a second
    // click on the focused node clears the focus).
    // Where the page draws the node's box, read without scrolling anything into view.
    let drawn_at = tab
        .eval(&format!(
            "(() => {{ const r = document.querySelector(\"svg.map a.node[data-node='{other}'] rect\")\
               .getBoundingClientRect(); return [r.left + r.width / 2, r.top + r.height / 2]; }})()"
        ))
        .await;
    let point = chromiumoxide::layout::Point {
        x: drawn_at[0].as_f64().unwrap(),
        y: drawn_at[1].as_f64().unwrap(),
    };
    let (cx, cy) = frame_centre(&tab).await;
    assert!(
        (point.x - cx).abs() < 2.0 && (point.y - cy).abs() < 2.0,
        "{point:?} is not the frame's centre ({cx}, {cy})"
    );
    tab.page.click(point).await.unwrap();
    assert_eq!(
        unfaded(&tab).await.len(),
        names.len(),
        "clicked again: no focus"
    );
    tab.page.click(point).await.unwrap();
    assert_eq!(unfaded(&tab).await, neighbourhood(&edges, other, 1));
    tab.eval(
        "(() => { const depth = document.querySelector('.map-tools select.depth'); \
         depth.value = '2'; depth.dispatchEvent(new Event('change')); })()",
    )
    .await;
    assert_eq!(unfaded(&tab).await, neighbourhood(&edges, other, 2));
    assert!(tab.path().await.contains("focus=svc-050&depth=2"));
    tab.screenshot("map-200-services-focused").await;

    assert_eq!(tab.errors(), Vec::<String>::new(), "script errors");
    browser.close().await.unwrap();
    events.abort();
    server.stop();
}

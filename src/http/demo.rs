//! The demo page's files, compiled into the binary: `GET <http.demo_path>`
//! is the page, and the JavaScript client bundle sits next to it
//! (`<demo_path>/tickfan.js`, the browser global build, and
//! `<demo_path>/tickfan.mjs`, the ES module), so a browser pointed at a
//! bare broker sees a live market (with `--demo-feed`) and any page can
//! load the client from the broker it talks to.
//!
//! Separate from the router because it owns bytes, not decisions: the
//! sources are `clients/demo/` and the committed build of `clients/js/`
//! (`clients/js/dist/`, checked against its TypeScript source by the test
//! command), embedded with `include_bytes!` so the binary needs no files
//! at run time. Pure: a path in, an asset or nothing out.

/// One embedded file and how it is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asset {
    pub content_type: &'static str,
    pub body: &'static [u8],
    /// `Cache-Control`: the page and bundle change with the binary, whose
    /// upgrade a browser cannot see, so they are revalidated (`no-cache`)
    /// rather than kept for a fixed time.
    pub cache_control: &'static str,
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const REVALIDATE: &str = "no-cache";

/// The files below the demo path, by their name there.
const ASSETS: [(&str, Asset); 5] = [
    (
        "",
        Asset {
            content_type: HTML,
            body: include_bytes!("../../clients/demo/index.html"),
            cache_control: REVALIDATE,
        },
    ),
    (
        "demo.js",
        Asset {
            content_type: JS,
            body: include_bytes!("../../clients/demo/demo.js"),
            cache_control: REVALIDATE,
        },
    ),
    (
        "demo.css",
        Asset {
            content_type: CSS,
            body: include_bytes!("../../clients/demo/demo.css"),
            cache_control: REVALIDATE,
        },
    ),
    (
        "tickfan.js",
        Asset {
            content_type: JS,
            body: include_bytes!("../../clients/js/dist/tickfan.js"),
            cache_control: REVALIDATE,
        },
    ),
    (
        "tickfan.mjs",
        Asset {
            content_type: JS,
            body: include_bytes!("../../clients/js/dist/tickfan.mjs"),
            cache_control: REVALIDATE,
        },
    ),
];

/// Whether `path` lies under the demo path (the page itself or a file
/// below it), so that the router hands it to the demo route.
pub fn is_demo_path(path: &str, demo_path: &str) -> bool {
    match path.strip_prefix(demo_path) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// The asset `path` names under `demo_path`; `None` (a 404) for any other
/// name. `<demo_path>` and `<demo_path>/` are both the page.
pub fn demo_asset(path: &str, demo_path: &str) -> Option<Asset> {
    let rest = path.strip_prefix(demo_path)?;
    let name = match rest.strip_prefix('/') {
        Some(name) => name,
        None if rest.is_empty() => "",
        None => return None,
    };
    ASSETS
        .iter()
        .find(|(file, _)| *file == name)
        .map(|(_, asset)| *asset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_and_bundle_by_name() {
        let page = demo_asset("/demo", "/demo").unwrap();
        assert_eq!(page.content_type, HTML);
        assert_eq!(demo_asset("/demo/", "/demo"), Some(page));
        assert_eq!(demo_asset("/demo/tickfan.js", "/demo").unwrap().content_type, JS);
        assert_eq!(demo_asset("/demo/demo.css", "/demo").unwrap().content_type, CSS);
        assert_eq!(demo_asset("/demo/nope.js", "/demo"), None);
        assert_eq!(demo_asset("/demo/../etc/passwd", "/demo"), None);
        assert_eq!(demo_asset("/demox", "/demo"), None);
        assert!(is_demo_path("/demo", "/demo"));
        assert!(is_demo_path("/demo/x", "/demo"));
        assert!(!is_demo_path("/demox", "/demo"));
        assert!(!is_demo_path("/", "/demo"));
    }
}

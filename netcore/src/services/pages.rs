//! The two pages: `/` (HTML) and `/stats` (plain `key value` lines).

use alloc::string::String;
use core::fmt::Write;

use super::ServiceStats;
use crate::config::{level_name, NetConfig};
use crate::status::StatusSource;

/// Everything a page shows.
pub(crate) struct PageContext<'a> {
    pub config: &'a NetConfig,
    pub status: &'a dyn StatusSource,
}

impl PageContext<'_> {
    /// `key value` lines: who this guest is, then the device's counters,
    /// then the services'.
    pub fn stats_text(&self, stats: &ServiceStats) -> String {
        let c = self.config;
        let mut out = String::new();
        // Writing to a String cannot fail; a source that fails just stops.
        let _ = writeln!(out, "name {}", c.name);
        let _ = writeln!(out, "ip {}", c.ip);
        match c.gateway {
            Some(gw) => {
                let _ = writeln!(out, "gateway {gw}");
            }
            None => out.push_str("gateway none\n"),
        }
        let _ = writeln!(out, "services {}", c.services);
        let _ = writeln!(out, "log {}", level_name(c.log));
        let _ = self.status.write_status(&mut out);
        if !out.ends_with('\n') {
            out.push('\n');
        }
        let _ = stats.write_status(&mut out);
        out
    }

    /// The HTML status page: the same lines as a table.
    pub fn status_html(&self, stats: &ServiceStats) -> String {
        let text = self.stats_text(stats);
        let mut out = String::new();
        out.push_str("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>");
        escape(&mut out, &self.config.name);
        out.push_str(" status</title></head>\n<body>\n<h1>");
        escape(&mut out, &self.config.name);
        out.push_str("</h1>\n<table>\n<tr><th>key</th><th>value</th></tr>\n");
        for line in text.lines() {
            let (key, value) = line.split_once(' ').unwrap_or((line, ""));
            out.push_str("<tr><td>");
            escape(&mut out, key);
            out.push_str("</td><td>");
            escape(&mut out, value);
            out.push_str("</td></tr>\n");
        }
        out.push_str(
            "</table>\n<p>As plain text: <a href=\"/stats\">/stats</a></p>\n</body></html>\n",
        );
        out
    }
}

/// Appends `s` with HTML's special characters escaped.
pub(crate) fn escape(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Hostile;

    impl StatusSource for Hostile {
        fn write_status(&self, out: &mut dyn Write) -> core::fmt::Result {
            out.write_str("<script> \"x\"&'y'")
        }
    }

    #[test]
    fn pages_escape_and_end_lines() {
        let config = NetConfig::parse("ip=10.0.0.2/24 gw=10.0.0.1 name=a").unwrap();
        let page = PageContext {
            config: &config,
            status: &Hostile,
        };
        let stats = ServiceStats {
            http_ok: 3,
            ..ServiceStats::default()
        };
        let text = page.stats_text(&stats);
        assert!(text.starts_with("name a\nip 10.0.0.2/24\ngateway 10.0.0.1\nservices echo,http,discard,chargen\nlog info\n<script> \"x\"&'y'\nudp_echo_datagrams 0\n"), "{text}");
        assert!(text.contains("\nhttp_ok 3\n"));
        let html = page.status_html(&stats);
        assert!(
            html.contains("<tr><td>&lt;script&gt;</td><td>&quot;x&quot;&amp;&#39;y&#39;</td></tr>"),
            "{html}"
        );
        assert!(!html.contains("<script>"));
    }
}

//! The compile-time half of the `telemetry` facade: reads an SDK's `catalog.toml` while the SDK
//! compiles and generates one typed handle constant per declared name.
//!
//! Not for direct use: SDKs call `telemetry::catalog!("catalog.toml")`, which passes the
//! facade's own path in so that the generated code names the facade however the SDK renamed it.
//! The catalog is parsed and validated by `telemetry-model`, the same code that parses it at run
//! time, so the [`CatalogId`](telemetry_model::CatalogId) computed here is the one the running
//! catalog has.
//!
//! The crate uses no parsing or quoting library: its input is one string literal and its output
//! a few constants, and leaving `syn` out keeps the SDK's build short.
//!
//! # Feature flags
//!
//! None.
//!
//! # Supported Rust versions
//!
//! The workspace's `rust-version` (1.89) and newer.

use std::fmt::Write as _;
use std::path::PathBuf;

use proc_macro::{Delimiter, Group, Ident, Literal, Punct, Spacing, Span, TokenStream, TokenTree};
use telemetry_model::{Catalog, Section};

/// The placeholder the generated text uses for the facade's path, replaced by the real one.
const FACADE: &str = "__telemetry_facade";

/// Generates the typed handles of a catalog; called by `telemetry::catalog!`.
///
/// Input: the facade's path (`$crate`), then `path "file.toml"` (relative to the SDK's
/// `Cargo.toml`) or `inline "..."` (the catalog's text).
#[doc(hidden)]
#[proc_macro]
pub fn generate_catalog(input: TokenStream) -> TokenStream {
    let mut tokens = without_invisible_groups(input).into_iter();
    let facade = tokens.next();
    let kind = tokens.next();
    let literal = tokens.next();
    let (Some(facade), Some(TokenTree::Ident(kind)), Some(TokenTree::Literal(literal)), None) =
        (facade, kind, literal, tokens.next())
    else {
        return compile_error(
            "expected `catalog!(\"catalog.toml\")` or `catalog!(inline: \"...\")`",
            Span::call_site(),
        );
    };
    let span = literal.span();
    let Some(value) = string_value(&literal.to_string()) else {
        return compile_error("expected a string literal", span);
    };
    let (text, source) = match kind.to_string().as_str() {
        "path" => match read_catalog(&value) {
            Ok((text, path)) => (text, Source::File(path)),
            Err(message) => return compile_error(&message, span),
        },
        "inline" => (value, Source::Inline(literal)),
        _ => return compile_error("expected `path` or `inline`", kind.span()),
    };
    match Catalog::from_toml(&text) {
        Ok(catalog) => match generate(&catalog, &source).parse::<TokenStream>() {
            Ok(generated) => replace_facade(generated, &facade, span),
            Err(error) => compile_error(&format!("generated code does not parse: {error}"), span),
        },
        Err(error) => compile_error(&error.to_string(), span),
    }
}

/// Where the catalog's text comes from, which is what the generated code embeds.
enum Source {
    /// A file, embedded with `include_str!` so that changing it rebuilds the SDK.
    File(PathBuf),
    /// The literal the SDK wrote.
    Inline(Literal),
}

fn read_catalog(relative: &str) -> Result<(String, PathBuf), String> {
    let root = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .ok_or_else(|| "CARGO_MANIFEST_DIR is not set: build with cargo".to_owned())?;
    let path = root.join(relative);
    let text = std::fs::read_to_string(&path)
        .map_err(|error| format!("cannot read the catalog {}: {error}", path.display()))?;
    Ok((text, path))
}

/// The Rust source of the handles, naming the facade with the placeholder.
fn generate(catalog: &Catalog, source: &Source) -> String {
    let id = format!(
        "{FACADE}::CatalogId::__from_generated({:#018x}_u64)",
        catalog.id().fingerprint()
    );
    let mut out = String::new();
    let embedded = match source {
        Source::File(path) => format!("::core::include_str!({:?})", path.display().to_string()),
        Source::Inline(literal) => literal.to_string(),
    };
    let _ = write!(
        out,
        "/// The catalog's text, compiled in: what `TelemetryConfig::new` takes.\n\
         #[allow(dead_code, unreachable_pub)]\n\
         pub const CATALOG_TOML: &str = {embedded};\n\
         /// The identity every handle of this catalog carries.\n\
         #[allow(dead_code, unreachable_pub)]\n\
         pub const CATALOG_ID: {FACADE}::CatalogId = {id};\n"
    );
    for section in Section::ALL {
        let (handle, module_doc) = match section {
            Section::Features => ("Feature", "Features"),
            Section::Metrics => ("Metric", "Metrics"),
            Section::ExceptionTypes => (
                "ExceptionType",
                "Exception types; everything else is reported only as `ExceptionType::OTHER`",
            ),
            Section::ConfigErrors => ("ConfigErrorKind", "Kinds of configuration errors"),
            Section::Integrations => (
                "Integration",
                "Integrations; everything else is reported only as `Integration::OTHER`",
            ),
            Section::BlockTypes => ("BlockType", "Block types"),
            Section::Commands => ("CommandName", "Commands"),
        };
        let _ = write!(
            out,
            "/// {module_doc}, as declared in the catalog's `{}` section.\n\
             #[allow(dead_code, unreachable_pub)]\n\
             pub mod {} {{\n",
            section.key(),
            section.key()
        );
        for (index, entry) in catalog.entries(section).iter().enumerate() {
            let _ = write!(
                out,
                "    #[doc = {:?}]\n    pub const {}: {FACADE}::{handle} = \
                 {FACADE}::{handle}::__from_generated({id}, {index});\n",
                entry.description,
                entry.name.as_str().to_ascii_uppercase(),
            );
        }
        out.push_str("}\n");
    }
    out
}

/// The generated tokens with the placeholder replaced by the facade's path (`$crate`).
fn replace_facade(stream: TokenStream, facade: &TokenTree, span: Span) -> TokenStream {
    stream
        .into_iter()
        .map(|token| match token {
            TokenTree::Ident(ident) if ident.to_string() == FACADE => facade.clone(),
            TokenTree::Group(group) => {
                let mut replaced = Group::new(
                    group.delimiter(),
                    replace_facade(group.stream(), facade, span),
                );
                replaced.set_span(span);
                TokenTree::Group(replaced)
            }
            mut other => {
                other.set_span(span);
                other
            }
        })
        .collect()
}

/// The tokens with the invisible groups that `macro_rules!` wraps its fragments in opened.
fn without_invisible_groups(stream: TokenStream) -> TokenStream {
    stream
        .into_iter()
        .flat_map(|token| match token {
            TokenTree::Group(group) if group.delimiter() == Delimiter::None => {
                without_invisible_groups(group.stream())
                    .into_iter()
                    .collect()
            }
            other => vec![other],
        })
        .collect()
}

/// `compile_error!("message")` at `span`.
fn compile_error(message: &str, span: Span) -> TokenStream {
    let mut message = Literal::string(message);
    message.set_span(span);
    let mut bang = Punct::new('!', Spacing::Alone);
    bang.set_span(span);
    let mut arguments = Group::new(
        Delimiter::Parenthesis,
        TokenStream::from(TokenTree::Literal(message)),
    );
    arguments.set_span(span);
    let mut semicolon = Punct::new(';', Spacing::Alone);
    semicolon.set_span(span);
    [
        TokenTree::Ident(Ident::new("compile_error", span)),
        TokenTree::Punct(bang),
        TokenTree::Group(arguments),
        TokenTree::Punct(semicolon),
    ]
    .into_iter()
    .collect()
}

/// The value of a string literal as written in source: plain with the common escapes, or raw.
fn string_value(source: &str) -> Option<String> {
    if let Some(raw) = source.strip_prefix('r') {
        let hashes = raw.len() - raw.trim_start_matches('#').len();
        let body = raw.get(hashes..raw.len().checked_sub(hashes)?)?;
        return body.strip_prefix('"')?.strip_suffix('"').map(str::to_owned);
    }
    let body = source.strip_prefix('"')?.strip_suffix('"')?;
    let mut value = String::with_capacity(body.len());
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            value.push(c);
            continue;
        }
        match chars.next()? {
            'n' => value.push('\n'),
            'r' => value.push('\r'),
            't' => value.push('\t'),
            '0' => value.push('\0'),
            '\\' => value.push('\\'),
            '"' => value.push('"'),
            '\'' => value.push('\''),
            // A line continuation: the newline and the next line's indentation are dropped.
            '\n' => {
                let rest: String = chars.collect();
                value.push_str(&string_value(&format!("\"{}\"", rest.trim_start()))?);
                return Some(value);
            }
            // Anything rarer is refused rather than misread: use a raw string.
            _ => return None,
        }
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::string_value;

    #[test]
    fn string_literals_read_as_the_compiler_reads_them() {
        let cases = [
            (r#""catalog.toml""#, Some("catalog.toml")),
            (
                r#""[features]\nretries = \"x\"""#,
                Some("[features]\nretries = \"x\""),
            ),
            (r#""a\t\\b""#, Some("a\t\\b")),
            ("\"one \\\n        two\"", Some("one two")),
            (
                r##"r#"[features]
x = "y""#"##,
                Some("[features]\nx = \"y\""),
            ),
            (r#"r"plain""#, Some("plain")),
            // Rarer escapes are refused rather than misread.
            (r#""\u{41}""#, None),
            ("catalog.toml", None),
            ("b\"bytes\"", None),
        ];
        for (source, expected) in cases {
            assert_eq!(string_value(source).as_deref(), expected, "{source}");
        }
    }
}

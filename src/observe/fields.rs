//! Selective decoding: read only the fields a mapping needs from a JSON
//! event.
//!
//! The wanted field paths form a trie over path segments. Decoding walks
//! the event once with serde; keys outside the trie are skipped with
//! `IgnoredAny` (no allocation, no tree), and only values at wanted paths
//! are built. A key containing dots (`"id.orig_h"`) is split into segments,
//! so nested objects and dotted keys reach the same trie nodes. A wanted
//! path that crosses a list collects every element's value into a list.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::matcher::FastMap;

/// Identifies one wanted field path.
pub type FieldId = usize;

#[derive(Debug, Default, Clone)]
struct Node {
    children: Children,
    field: Option<FieldId>,
}

/// The children of a trie node by key segment. Most nodes have a handful,
/// which a scan comparing lengths first finds sooner than hashing the key;
/// a node with many (the top level of a rich format) uses a map.
#[derive(Debug, Default, Clone)]
struct Children {
    few: Vec<(Box<str>, usize)>,
    many: Option<FastMap<Box<str>, usize>>,
}

/// Children a node keeps in a scanned list before it uses a map.
const FEW_CHILDREN: usize = 8;

impl Children {
    fn get(&self, key: &str) -> Option<&usize> {
        match &self.many {
            Some(map) => map.get(key),
            None => self
                .few
                .iter()
                .find(|(k, _)| k.len() == key.len() && **k == *key)
                .map(|(_, child)| child),
        }
    }

    fn insert(&mut self, key: &str, child: usize) {
        self.few.push((key.into(), child));
        if let Some(map) = &mut self.many {
            map.insert(key.into(), child);
        } else if self.few.len() > FEW_CHILDREN {
            self.many = Some(self.few.iter().cloned().collect());
        }
    }

    fn is_empty(&self) -> bool {
        self.few.is_empty()
    }
}

/// The set of wanted field paths.
#[derive(Debug, Clone)]
pub struct FieldSet {
    nodes: Vec<Node>,
    paths: Vec<String>,
}

impl Default for FieldSet {
    fn default() -> Self {
        FieldSet {
            nodes: vec![Node::default()],
            paths: Vec::new(),
        }
    }
}

impl FieldSet {
    /// An empty set.
    pub fn new() -> FieldSet {
        FieldSet::default()
    }

    /// Adds `path` (segments separated by dots) and returns its id; adding
    /// a path twice returns the same id.
    pub fn add(&mut self, path: &str) -> FieldId {
        let mut node = 0;
        for segment in path.split('.') {
            node = match self.nodes[node].children.get(segment) {
                Some(&child) => child,
                None => {
                    self.nodes.push(Node::default());
                    let child = self.nodes.len() - 1;
                    self.nodes[node].children.insert(segment, child);
                    child
                }
            };
        }
        match self.nodes[node].field {
            Some(id) => id,
            None => {
                let id = self.paths.len();
                self.paths.push(path.to_string());
                self.nodes[node].field = Some(id);
                id
            }
        }
    }

    /// The id of `path`, if it was added.
    pub fn find(&self, path: &str) -> Option<FieldId> {
        self.nodes[self.descend(0, path)?].field
    }

    /// Number of wanted paths.
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    /// True when no path is wanted.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// The path text of `id`.
    pub fn path(&self, id: FieldId) -> &str {
        &self.paths[id]
    }

    /// Decodes the wanted fields of one JSON event.
    ///
    /// # Errors
    ///
    /// Returns the JSON error when `text` is not valid JSON.
    pub fn extract(&self, text: &str) -> Result<Fields, serde_json::Error> {
        let mut fields = Fields::default();
        self.extract_into(text, &mut fields)?;
        Ok(fields)
    }

    /// As [`FieldSet::extract`], reusing `fields` (its previous values are
    /// dropped), which saves an allocation per event.
    ///
    /// # Errors
    ///
    /// Returns the JSON error when `text` is not valid JSON.
    pub fn extract_into(&self, text: &str, fields: &mut Fields) -> Result<(), serde_json::Error> {
        fields.values.clear();
        fields.values.resize(self.paths.len(), None);
        let mut de = serde_json::Deserializer::from_str(text);
        NodeSeed {
            set: self,
            node: 0,
            values: &mut fields.values,
            in_list: false,
        }
        .deserialize(&mut de)?;
        de.end()
    }

    /// The wanted fields of an already parsed JSON value.
    pub fn extract_value(&self, value: &Value) -> Fields {
        let mut values = vec![None; self.paths.len()];
        self.walk_value(0, value, &mut values, false);
        Fields { values }
    }

    fn walk_value(&self, node: usize, value: &Value, out: &mut [Option<Value>], in_list: bool) {
        if let Some(field) = self.nodes[node].field {
            store(out, field, value.clone(), in_list);
        }
        if self.nodes[node].children.is_empty() {
            return;
        }
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    if let Some(next) = self.descend(node, key) {
                        self.walk_value(next, child, out, in_list);
                    }
                }
            }
            Value::Array(items) => {
                for item in items {
                    self.walk_value_children(node, item, out);
                }
            }
            _ => {}
        }
    }

    /// Like `walk_value` for a list element: the node's own field is not
    /// set again, its children collect into lists.
    fn walk_value_children(&self, node: usize, value: &Value, out: &mut [Option<Value>]) {
        if let Value::Object(map) = value {
            for (key, child) in map {
                if let Some(next) = self.descend(node, key) {
                    self.walk_value(next, child, out, true);
                }
            }
        }
    }

    /// The node reached from `node` by the dot-separated segments of `key`.
    fn descend(&self, node: usize, key: &str) -> Option<usize> {
        if !key.contains('.') {
            return self.nodes[node].children.get(key).copied();
        }
        let mut at = node;
        for segment in key.split('.') {
            at = *self.nodes[at].children.get(segment)?;
        }
        Some(at)
    }
}

fn store(out: &mut [Option<Value>], field: FieldId, value: Value, in_list: bool) {
    if !in_list {
        out[field] = Some(value);
        return;
    }
    match &mut out[field] {
        Some(Value::Array(items)) => items.push(value),
        slot => *slot = Some(Value::Array(vec![value])),
    }
}

/// The decoded values of one event, by [`FieldId`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Fields {
    values: Vec<Option<Value>>,
}

impl Fields {
    /// The value of `field`, if the event had it (`null` counts as absent).
    pub fn get(&self, field: FieldId) -> Option<&Value> {
        self.values.get(field)?.as_ref().filter(|v| !v.is_null())
    }
}

/// Decodes one JSON value positioned at trie node `node`.
struct NodeSeed<'a> {
    set: &'a FieldSet,
    node: usize,
    values: &'a mut Vec<Option<Value>>,
    /// Inside a list crossed by a wanted path: values are collected.
    in_list: bool,
}

impl<'de> DeserializeSeed<'de> for NodeSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        let node = &self.set.nodes[self.node];
        if let Some(field) = node.field {
            // A wanted value: build it (and its wanted descendants from it).
            let value = <Value as serde::Deserialize>::deserialize(deserializer)?;
            if !node.children.is_empty() {
                self.set
                    .walk_value(self.node, &value, self.values, self.in_list);
            } else {
                store(self.values, field, value, self.in_list);
            }
            return Ok(());
        }
        deserializer.deserialize_any(NodeVisitor {
            set: self.set,
            node: self.node,
            values: self.values,
            in_list: self.in_list,
        })
    }
}

struct NodeVisitor<'a> {
    set: &'a FieldSet,
    node: usize,
    values: &'a mut Vec<Option<Value>>,
    in_list: bool,
}

impl<'de> Visitor<'de> for NodeVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match self.set.descend(self.node, &key) {
                Some(next) => map.next_value_seed(NodeSeed {
                    set: self.set,
                    node: next,
                    values: self.values,
                    in_list: self.in_list,
                })?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        // A wanted path crosses this list: every element contributes.
        while seq
            .next_element_seed(NodeSeed {
                set: self.set,
                node: self.node,
                values: self.values,
                in_list: true,
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn nested_and_dotted_keys_reach_the_same_field() {
        let mut set = FieldSet::new();
        let orig = set.add("id.orig_h");
        let src = set.add("source.ip");
        let zeek = set.extract(r#"{"ts": 1.5, "id.orig_h": "10.0.0.1", "skip": {"a": [1, 2]}}"#);
        let ecs =
            set.extract(r#"{"source": {"ip": "10.0.0.2", "port": 1}, "id": {"orig_h": "x"}}"#);
        let zeek = zeek.unwrap();
        let ecs = ecs.unwrap();
        assert_eq!(zeek.get(orig), Some(&json!("10.0.0.1")));
        assert_eq!(zeek.get(src), None);
        assert_eq!(ecs.get(src), Some(&json!("10.0.0.2")));
        assert_eq!(ecs.get(orig), Some(&json!("x")));
    }

    #[test]
    fn paths_through_lists_collect() {
        let mut set = FieldSet::new();
        let names = set.add("dns.queries.rrname");
        let whole = set.add("tags");
        let text = r#"{"dns": {"queries": [{"rrname": "a.example"}, {"rrname": "b.example"}]},
                      "tags": ["x", "y"]}"#;
        let fields = set.extract(text).unwrap();
        assert_eq!(fields.get(names), Some(&json!(["a.example", "b.example"])));
        assert_eq!(fields.get(whole), Some(&json!(["x", "y"])));
        let value: Value = serde_json::from_str(text).unwrap();
        assert_eq!(set.extract_value(&value), fields);
    }

    #[test]
    fn a_wanted_value_with_wanted_children() {
        let mut set = FieldSet::new();
        let file = set.add("file");
        let name = set.add("file.name");
        let fields = set
            .extract(r#"{"file": {"name": "a.exe", "size": 3}}"#)
            .unwrap();
        assert_eq!(fields.get(file), Some(&json!({"name": "a.exe", "size": 3})));
        assert_eq!(fields.get(name), Some(&json!("a.exe")));
    }

    #[test]
    fn invalid_json_and_nulls() {
        let mut set = FieldSet::new();
        let a = set.add("a");
        assert!(set.extract(r#"{"a": 1"#).is_err());
        assert!(set.extract(r#"{"a": 1} trailing"#).is_err());
        assert_eq!(set.extract(r#"{"a": null}"#).unwrap().get(a), None);
    }
}

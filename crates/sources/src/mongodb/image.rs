//! A document as one update left it: its pre-image with the update's description applied
//! (`updatedFields`, `removedFields`, `truncatedArrays`, in the order the server applies
//! them: truncations, removals, then sets). Exact whatever the server gives as
//! `fullDocument`, which some servers fill with the document as it is when read.

use mongodb::bson::{Bson, Document};
use mongodb::change_stream::event::UpdateDescription;

/// `pre` with `update` applied; None when a path does not fit the document (the caller then
/// takes the server's `fullDocument`).
pub fn post_image(pre: &Document, update: &UpdateDescription) -> Option<Document> {
    let mut doc = pre.clone();
    for t in update.truncated_arrays.iter().flatten() {
        match get_mut(&mut doc, &t.field)? {
            Bson::Array(a) => a.truncate(t.new_size.max(0) as usize),
            _ => return None,
        }
    }
    for path in &update.removed_fields {
        remove(&mut doc, path)?;
    }
    for (path, value) in &update.updated_fields {
        set(&mut doc, path, value.clone())?;
    }
    Some(doc)
}

fn split(path: &str) -> (&str, Option<&str>) {
    match path.split_once('.') {
        Some((head, rest)) => (head, Some(rest)),
        None => (path, None),
    }
}

fn get_mut<'a>(doc: &'a mut Document, path: &str) -> Option<&'a mut Bson> {
    let (head, rest) = split(path);
    let v = doc.get_mut(head)?;
    match rest {
        None => Some(v),
        Some(rest) => get_in(v, rest),
    }
}

fn get_in<'a>(v: &'a mut Bson, path: &str) -> Option<&'a mut Bson> {
    let (head, rest) = split(path);
    let child = match v {
        Bson::Document(d) => d.get_mut(head)?,
        Bson::Array(a) => a.get_mut(head.parse::<usize>().ok()?)?,
        _ => return None,
    };
    match rest {
        None => Some(child),
        Some(rest) => get_in(child, rest),
    }
}

fn remove(doc: &mut Document, path: &str) -> Option<()> {
    match path.rsplit_once('.') {
        None => {
            doc.remove(path);
            Some(())
        }
        Some((parent, last)) => match get_mut(doc, parent)? {
            Bson::Document(d) => {
                d.remove(last);
                Some(())
            }
            // $unset of an array element leaves null in its place.
            Bson::Array(a) => {
                *a.get_mut(last.parse::<usize>().ok()?)? = Bson::Null;
                Some(())
            }
            _ => None,
        },
    }
}

fn set(doc: &mut Document, path: &str, value: Bson) -> Option<()> {
    let (head, rest) = split(path);
    match rest {
        None => {
            doc.insert(head, value);
            Some(())
        }
        Some(rest) => {
            let child = doc
                .entry(head.to_string())
                .or_insert_with(|| Bson::Document(Document::new()));
            set_in(child, rest, value)
        }
    }
}

fn set_in(v: &mut Bson, path: &str, value: Bson) -> Option<()> {
    match v {
        Bson::Document(d) => set(d, path, value),
        Bson::Array(a) => {
            let (head, rest) = split(path);
            let i = head.parse::<usize>().ok()?;
            // Setting past the end pads with nulls, as the server does.
            if a.len() <= i {
                a.resize(i + 1, Bson::Null);
            }
            match rest {
                None => {
                    a[i] = value;
                    Some(())
                }
                Some(rest) => {
                    if matches!(a[i], Bson::Null) {
                        a[i] = Bson::Document(Document::new());
                    }
                    set_in(&mut a[i], rest, value)
                }
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::doc;

    fn update(d: Document) -> UpdateDescription {
        mongodb::bson::from_document(d).unwrap()
    }

    #[test]
    fn applies_sets_unsets_and_truncations_on_nested_paths() {
        let pre =
            doc! { "_id": 1, "n": 1, "c": { "a": { "city": "Oslo" } }, "items": [1, 2, 3], "q": 5 };
        let u = update(doc! {
            "updatedFields": { "c.a.city": "Bergen", "items.3": 4, "n": 2, "new.deep": true },
            "removedFields": ["q"],
            "truncatedArrays": [ { "field": "items", "newSize": 2 } ],
        });
        assert_eq!(
            post_image(&pre, &u).unwrap(),
            doc! { "_id": 1, "n": 2, "c": { "a": { "city": "Bergen" } }, "items": [1, 2, Bson::Null, 4], "new": { "deep": true } }
        );
        let bad = update(doc! { "updatedFields": { "n.x": 1 }, "removedFields": [] });
        assert_eq!(post_image(&pre, &bad), None);
    }
}

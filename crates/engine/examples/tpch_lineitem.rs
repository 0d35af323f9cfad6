//! Writes TPC-H `lineitem` at a scale factor as a `.tbl` file (what `sluice` benchmarks read)
//! and optionally the same rows as CSV with a header (what the peer tools read).
//!
//! cargo run --release -p sluice-engine --example tpch_lineitem -- SF OUT.tbl [OUT.csv]

use std::io::{BufWriter, Write};

use tpchgen::generators::LineItemGenerator;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: tpch_lineitem SCALE_FACTOR OUT.tbl [OUT.csv]");
        std::process::exit(2);
    }
    let sf: f64 = args[1].parse().expect("scale factor");
    let mut tbl = BufWriter::with_capacity(1 << 20, std::fs::File::create(&args[2])?);
    let mut csv = match args.get(3) {
        Some(p) => Some(BufWriter::with_capacity(1 << 20, std::fs::File::create(p)?)),
        None => None,
    };
    if let Some(c) = csv.as_mut() {
        writeln!(c, "l_orderkey,l_partkey,l_suppkey,l_linenumber,l_quantity,l_extendedprice,l_discount,l_tax,l_returnflag,l_linestatus,l_shipdate,l_commitdate,l_receiptdate,l_shipinstruct,l_shipmode,l_comment")?;
    }
    let mut n = 0u64;
    for l in LineItemGenerator::new(sf, 1, 1).iter() {
        let line = l.to_string();
        writeln!(tbl, "{line}")?;
        if let Some(c) = csv.as_mut() {
            // TPC-H text has no commas or quotes except in comments; quote those.
            let fields: Vec<&str> = line.trim_end_matches('|').split('|').collect();
            let quoted: Vec<String> = fields
                .iter()
                .map(|f| {
                    if f.contains(',') || f.contains('"') {
                        format!("\"{}\"", f.replace('"', "\"\""))
                    } else {
                        f.to_string()
                    }
                })
                .collect();
            writeln!(c, "{}", quoted.join(","))?;
        }
        n += 1;
    }
    tbl.flush()?;
    if let Some(mut c) = csv {
        c.flush()?;
    }
    println!("{n}");
    Ok(())
}

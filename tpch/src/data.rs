//! TPC-H data from `tpchgen`, streamed into the tables with COPY, and the refresh cycles.
//! Each order falls in one of 1000 bands by a hash of its key. Bands 0..cycles are held back
//! at load time: cycle c inserts band c's orders with their lineitems (RF1, 0.1 % of the
//! orders, as the specification's refresh function). Cycle c deletes band 500 + c with its
//! lineitems (RF2, 0.1 %), and updates customers (1 %), partsupp rows (1 %), orders of band
//! 700 + c (priority and date) and lineitems of orders of band 800 + c (quantity and discount).

use std::io::Write;

use postgres::{Client, GenericClient};
use tpchgen::generators::{
    CustomerGenerator, LineItemGenerator, NationGenerator, OrderGenerator, PartGenerator,
    PartSuppGenerator, RegionGenerator, SupplierGenerator,
};

use crate::err;

/// At most this many cycles (each takes a band of its own for RF1).
pub const MAX_CYCLES: u32 = 100;

/// The band of an order key, in SQL (the same hash as `band`).
fn band_sql(key: &str) -> String {
    format!("(({key}) * 2654435761) % 1000")
}

fn band(key: i64) -> i64 {
    (key * 2_654_435_761) % 1000
}

/// The cycle whose RF1 inserts the order `key` (and its lineitems), if it is held back.
fn held_back(key: i64, cycles: u32) -> Option<usize> {
    let b = band(key);
    (b < i64::from(cycles)).then_some(b as usize)
}

/// A generated line in tbl format without its final `|`: a row of COPY's text format.
fn row(line: String) -> String {
    let mut l = line;
    if l.ends_with('|') {
        l.pop();
    }
    l
}

pub struct Dataset {
    sf: f64,
    cycles: u32,
    /// Per cycle, the held-back orders and lineitems (COPY rows) RF1 inserts.
    new_orders: Vec<Vec<String>>,
    new_lines: Vec<Vec<String>>,
}

fn copy(
    c: &mut impl GenericClient,
    table: &str,
    rows: impl Iterator<Item = String>,
) -> Result<u64, String> {
    let mut w = c
        .copy_in(&format!(
            "COPY {table} FROM STDIN (FORMAT text, DELIMITER '|')"
        ))
        .map_err(err(&format!("copy {table}")))?;
    let mut n = 0u64;
    for r in rows {
        w.write_all(r.as_bytes())
            .and_then(|_| w.write_all(b"\n"))
            .map_err(|e| format!("copy {table}: {e}"))?;
        n += 1;
    }
    w.finish().map_err(err(&format!("copy {table}")))?;
    Ok(n)
}

impl Dataset {
    /// A dataset of scale factor `sf` for `cycles` refresh cycles; `load` generates it.
    pub fn new(sf: f64, cycles: u32) -> Self {
        Dataset {
            sf,
            cycles,
            new_orders: vec![Vec::new(); cycles as usize],
            new_lines: vec![Vec::new(); cycles as usize],
        }
    }

    /// Loads every table but the held-back orders and lineitems; returns the row counts.
    pub fn load(&mut self, c: &mut Client) -> Result<String, String> {
        let sf = self.sf;
        let mut counts = Vec::new();
        // The six tables RF1 and RF2 leave alone, streamed as they are generated.
        fn rows<T: std::fmt::Display>(it: impl Iterator<Item = T>) -> impl Iterator<Item = String> {
            it.map(|r| row(r.to_string()))
        }
        let fixed: [(&str, Box<dyn Iterator<Item = String>>); 6] = [
            (
                "region",
                Box::new(rows(RegionGenerator::new(sf, 1, 1).iter())),
            ),
            (
                "nation",
                Box::new(rows(NationGenerator::new(sf, 1, 1).iter())),
            ),
            ("part", Box::new(rows(PartGenerator::new(sf, 1, 1).iter()))),
            (
                "supplier",
                Box::new(rows(SupplierGenerator::new(sf, 1, 1).iter())),
            ),
            (
                "partsupp",
                Box::new(rows(PartSuppGenerator::new(sf, 1, 1).iter())),
            ),
            (
                "customer",
                Box::new(rows(CustomerGenerator::new(sf, 1, 1).iter())),
            ),
        ];
        for (table, data) in fixed {
            let n = copy(c, table, data)?;
            counts.push(format!("{table} {n}"));
        }
        let mut orders = Vec::new();
        for o in OrderGenerator::new(sf, 1, 1).iter() {
            let key = o.o_orderkey;
            match held_back(key, self.cycles) {
                Some(cycle) => self.new_orders[cycle].push(row(o.to_string())),
                None => orders.push(row(o.to_string())),
            }
        }
        let n = copy(c, "orders", orders.into_iter())?;
        counts.push(format!("orders {n}"));
        // Lineitems stream (the largest table), the held-back ones kept.
        let mut held = vec![Vec::new(); self.cycles as usize];
        let cycles = self.cycles;
        let lines = LineItemGenerator::new(sf, 1, 1).iter().filter_map(|l| {
            match held_back(l.l_orderkey, cycles) {
                Some(cycle) => {
                    held[cycle].push(row(l.to_string()));
                    None
                }
                None => Some(row(l.to_string())),
            }
        });
        let n = copy(c, "lineitem", lines)?;
        counts.push(format!("lineitem {n}"));
        self.new_lines = held;
        let pool: usize = self.new_orders.iter().map(Vec::len).sum();
        counts.push(format!("{pool} orders held back for RF1"));
        Ok(counts.join(", "))
    }

    /// Applies cycle `cycle`'s changes in one transaction; returns what changed.
    pub fn cycle(&self, c: &mut Client, cycle: u32) -> Result<String, String> {
        let i = cycle as usize;
        let mut t = c.transaction().map_err(err("begin"))?;
        let o = copy(&mut t, "orders", self.new_orders[i].iter().cloned())?;
        let l = copy(&mut t, "lineitem", self.new_lines[i].iter().cloned())?;
        let exec = |t: &mut postgres::Transaction<'_>, sql: &str| -> Result<u64, String> {
            t.execute(sql, &[]).map_err(err(sql))
        };
        let doomed = format!("{} = {}", band_sql("o_orderkey"), 500 + cycle);
        let dl = exec(
            &mut t,
            &format!("DELETE FROM lineitem WHERE l_orderkey IN (SELECT o_orderkey FROM orders WHERE {doomed})"),
        )?;
        let dord = exec(&mut t, &format!("DELETE FROM orders WHERE {doomed}"))?;
        let uc = exec(
            &mut t,
            &format!(
                "UPDATE customer SET c_acctbal = c_acctbal + 10 WHERE c_custkey % 97 = {cycle}"
            ),
        )?;
        let ups = exec(
            &mut t,
            &format!(
                "UPDATE partsupp SET ps_supplycost = ps_supplycost + 1, ps_availqty = ps_availqty + 100 \
                 WHERE (ps_partkey + ps_suppkey) % 97 = {cycle}"
            ),
        )?;
        let uo = exec(
            &mut t,
            &format!(
                "UPDATE orders SET o_orderpriority = '1-URGENT', o_orderdate = o_orderdate + 1 WHERE {} = {}",
                band_sql("o_orderkey"),
                700 + cycle
            ),
        )?;
        let ul = exec(
            &mut t,
            &format!(
                "UPDATE lineitem SET l_quantity = l_quantity + 1, l_discount = 0.05 WHERE {} = {}",
                band_sql("l_orderkey"),
                800 + cycle
            ),
        )?;
        t.commit().map_err(err("commit"))?;
        Ok(format!(
            "RF1 +{o} orders +{l} lineitems, RF2 -{dord} orders -{dl} lineitems, updated {uc} customers, {ups} partsupp, {uo} orders, {ul} lineitems"
        ))
    }
}

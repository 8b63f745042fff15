//! Points of presence at real city coordinates, and the machines in them.

use purgecast_core::{Location, Member, MemberState, NodeId, Profile};

/// The shipped city list: name, country, region, latitude, longitude.
pub const CITIES_CSV: &str = include_str!("../data/cities.csv");

#[derive(Debug, Clone, PartialEq)]
pub struct City {
    pub name: String,
    pub country: String,
    pub region: String,
    pub lat: f64,
    pub lon: f64,
}

impl City {
    pub fn new(name: &str, region: &str, lat: f64, lon: f64) -> City {
        City { name: name.into(), country: String::new(), region: region.into(), lat, lon }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TopologyError {
    #[error("cities line {line}: {reason}")]
    BadLine { line: usize, reason: String },
    #[error("city {0:?} is listed twice")]
    Duplicate(String),
    #[error("asked for {asked} PoPs but only {have} cities are known")]
    TooManyPops { asked: usize, have: usize },
    #[error("a topology needs at least one PoP and one machine per PoP")]
    Empty,
    #[error("two machines hash to the same node id {0}")]
    IdCollision(NodeId),
}

/// Parses `name,country,region,lat,lon` lines after a header line.
pub fn parse_cities(text: &str) -> Result<Vec<City>, TopologyError> {
    let mut out: Vec<City> = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let bad = |reason: &str| TopologyError::BadLine { line: i + 1, reason: reason.to_string() };
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let [name, country, region, lat, lon] = f[..] else {
            return Err(bad("expected 5 comma-separated fields"));
        };
        let lat: f64 = lat.parse().map_err(|_| bad("latitude is not a number"))?;
        let lon: f64 = lon.parse().map_err(|_| bad("longitude is not a number"))?;
        if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
            return Err(bad("coordinates out of range"));
        }
        if name.is_empty() || region.is_empty() {
            return Err(bad("empty name or region"));
        }
        if out.iter().any(|c| c.name == name) {
            return Err(TopologyError::Duplicate(name.to_string()));
        }
        out.push(City { name: name.into(), country: country.into(), region: region.into(), lat, lon });
    }
    Ok(out)
}

pub fn builtin_cities() -> Result<Vec<City>, TopologyError> {
    parse_cities(CITIES_CSV)
}

#[derive(Debug, Clone)]
pub struct Pop {
    pub city: City,
    /// Index into [`Topology::regions`].
    pub region: usize,
    pub machines: Vec<usize>,
}

#[derive(Debug, Clone)]
pub struct Machine {
    pub id: NodeId,
    pub name: String,
    pub pop: usize,
}

#[derive(Debug, Clone)]
pub struct Topology {
    pub pops: Vec<Pop>,
    pub machines: Vec<Machine>,
    /// Region labels, sorted.
    pub regions: Vec<String>,
}

impl Topology {
    /// Takes `pops` cities spread evenly over the list (which is grouped by
    /// region, so a subset still spans the world) and puts `per_pop`
    /// machines in each.
    pub fn from_cities(cities: &[City], pops: usize, per_pop: usize) -> Result<Topology, TopologyError> {
        if pops == 0 || per_pop == 0 || cities.is_empty() {
            return Err(TopologyError::Empty);
        }
        if pops > cities.len() {
            return Err(TopologyError::TooManyPops { asked: pops, have: cities.len() });
        }
        let chosen: Vec<&City> = (0..pops).map(|i| &cities[i * cities.len() / pops]).collect();
        let mut regions: Vec<String> = chosen.iter().map(|c| c.region.clone()).collect();
        regions.sort();
        regions.dedup();
        let mut out = Topology { pops: Vec::new(), machines: Vec::new(), regions };
        let mut ids = std::collections::BTreeSet::new();
        for (p, city) in chosen.into_iter().enumerate() {
            let region = out.regions.iter().position(|r| *r == city.region).unwrap_or(0);
            let mut machines = Vec::with_capacity(per_pop);
            for k in 0..per_pop {
                let name = format!("{}#{k}", city.name);
                let id = NodeId::from_name(&name);
                if !ids.insert(id) {
                    return Err(TopologyError::IdCollision(id));
                }
                machines.push(out.machines.len());
                out.machines.push(Machine { id, name, pop: p });
            }
            out.pops.push(Pop { city: city.clone(), region, machines });
        }
        Ok(out)
    }

    /// The shipped world map.
    pub fn world(pops: usize, per_pop: usize) -> Result<Topology, TopologyError> {
        Topology::from_cities(&builtin_cities()?, pops, per_pop)
    }

    pub fn len(&self) -> usize {
        self.machines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.machines.is_empty()
    }

    pub fn pop_of(&self, m: usize) -> usize {
        self.machines[m].pop
    }

    pub fn region_of_pop(&self, p: usize) -> usize {
        self.pops[p].region
    }

    pub fn region_index(&self, label: &str) -> Option<usize> {
        self.regions.iter().position(|r| r == label)
    }

    /// The member record every engine learns about machine `m`.
    pub fn member(&self, m: usize, state: MemberState) -> Member {
        let mach = &self.machines[m];
        let pop = &self.pops[mach.pop];
        // The engine never reads names or addresses.
        let profile = Profile {
            location: Location { pop: pop.city.name.clone(), region: pop.city.region.clone() },
            ..Profile::default()
        };
        Member { state, ..Member::new(mach.id, profile) }
    }

    /// The selected PoP closest to a point (the core baseline's hub).
    pub fn nearest_pop(&self, lat: f64, lon: f64) -> usize {
        let mut best = (f64::INFINITY, 0);
        for (i, p) in self.pops.iter().enumerate() {
            let d = great_circle_km(lat, lon, p.city.lat, p.city.lon);
            if d < best.0 {
                best = (d, i);
            }
        }
        best.1
    }
}

/// Haversine distance on a sphere of the Earth's mean radius.
pub fn great_circle_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    const R: f64 = 6371.0;
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * R * a.sqrt().min(1.0).asin()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_list_parses_and_spans_every_region() {
        let cities = builtin_cities().unwrap();
        assert!(cities.len() >= 330, "{} cities", cities.len());
        let t = Topology::from_cities(&cities, 330, 10).unwrap();
        assert_eq!(t.len(), 3300);
        assert_eq!(t.regions, vec!["af", "as", "eu", "me", "na", "oc", "sa"]);
    }

    #[test]
    fn distances_match_known_city_pairs() {
        // London-New York is about 5,570 km.
        let d = great_circle_km(51.51, -0.13, 40.71, -74.01);
        assert!((d - 5570.0).abs() < 30.0, "{d}");
        assert_eq!(great_circle_km(10.0, 10.0, 10.0, 10.0), 0.0);
    }

    #[test]
    fn bad_lines_are_typed_errors() {
        assert!(matches!(parse_cities("h\nA,X,eu,1.0\n"), Err(TopologyError::BadLine { line: 2, .. })));
        assert!(matches!(parse_cities("h\nA,X,eu,100,0\n"), Err(TopologyError::BadLine { .. })));
        assert_eq!(parse_cities("h\nA,X,eu,1,1\nA,X,eu,1,1\n"), Err(TopologyError::Duplicate("A".into())));
        assert_eq!(Topology::world(10_000, 1).unwrap_err(), TopologyError::TooManyPops { asked: 10_000, have: 357 });
    }
}

//! The DWARF walk behind [`super::DwarfInfo`]: compilation units, subprograms and their
//! parameters, Go types, location expressions. Split from `dwarf/mod.rs`, which keeps the types it
//! produces and the rules that read them.

use super::*;

fn die_ref(unit: &gimli::Unit<R<'_>>, v: AttributeValue<R<'_>>) -> Option<DebugInfoOffset> {
    match v {
        AttributeValue::UnitRef(o) => o.to_debug_info_offset(&unit.header),
        AttributeValue::DebugInfoRef(o) => Some(o),
        _ => None,
    }
}

impl Loader<'_> {
    pub(super) fn run(mut self, dwarf: &gimli::Dwarf<R<'_>>) -> Result<DwarfInfo, DwarfError> {
        // Type 0: the unknown type, for parameters whose type DWARF does not give.
        self.types.add(GoType { name: "?".into(), size: 0, kind: Kind::Unknown });
        let mut units = dwarf.units();
        while let Some(header) = units.next()? {
            let unit = dwarf.unit(header)?;
            let first_func = self.funcs.len();
            self.read_unit(dwarf, &unit)?;
            self.fill_lines_from_line_program(dwarf, &unit, first_func)?;
        }
        self.link_types();
        Ok(self.link_functions())
    }

    fn read_unit(&mut self, dwarf: &gimli::Dwarf<R<'_>>, unit: &gimli::Unit<R<'_>>) -> Result<(), DwarfError> {
        let mut parents: Vec<Parent> = Vec::new();
        let mut depth: isize = 0;
        let mut cursor = unit.entries();
        while let Some((delta, die)) = cursor.next_dfs()? {
            depth += delta;
            if depth < 0 {
                break;
            }
            parents.truncate(depth as usize);
            let parent = parents.last().copied().unwrap_or(Parent::Other);
            let Some(offset) = die.offset().to_debug_info_offset(&unit.header) else {
                parents.push(Parent::Other);
                continue;
            };
            let name = |attr| -> Result<Option<String>, DwarfError> {
                Ok(match die.attr_value(attr)? {
                    Some(v) => Some(dwarf.attr_string(unit, v)?.to_string_lossy().into_owned()),
                    None => None,
                })
            };
            let reference = |attr| -> Result<Option<DebugInfoOffset>, DwarfError> {
                Ok(die.attr_value(attr)?.and_then(|v| die_ref(unit, v)))
            };
            let udata =
                |attr| -> Result<Option<u64>, DwarfError> { Ok(die.attr_value(attr)?.and_then(|v| v.udata_value())) };
            let flag = |attr| -> Result<Option<bool>, DwarfError> {
                Ok(die.attr_value(attr)?.map(|v| match v {
                    AttributeValue::Flag(f) => f,
                    other => other.udata_value().unwrap_or(0) != 0,
                }))
            };
            let mut me = Parent::Other;
            match die.tag() {
                gimli::DW_TAG_base_type
                | gimli::DW_TAG_pointer_type
                | gimli::DW_TAG_structure_type
                | gimli::DW_TAG_typedef
                | gimli::DW_TAG_array_type
                | gimli::DW_TAG_subroutine_type
                | gimli::DW_TAG_unspecified_type => {
                    let id = self.types.add(GoType {
                        name: name(gimli::DW_AT_name)?.unwrap_or_default(),
                        size: udata(gimli::DW_AT_byte_size)?.unwrap_or(0),
                        kind: Kind::Unknown,
                    });
                    self.type_at.insert(offset, id);
                    let encoding = match die.attr_value(gimli::DW_AT_encoding)? {
                        Some(AttributeValue::Encoding(e)) => Some(e),
                        Some(v) => v.udata_value().map(|e| gimli::DwAte(e as u8)),
                        None => None,
                    };
                    self.raw_types.push(RawType {
                        id,
                        tag: die.tag(),
                        go_kind: udata(DW_AT_GO_KIND)?,
                        encoding,
                        target: reference(gimli::DW_AT_type)?,
                        elem: reference(DW_AT_GO_ELEM)?,
                        count: None,
                        fields: Vec::new(),
                    });
                    me = Parent::Type(self.raw_types.len() - 1);
                }
                gimli::DW_TAG_member => {
                    if let Parent::Type(i) = parent {
                        let field = Field {
                            name: name(gimli::DW_AT_name)?.unwrap_or_default(),
                            offset: udata(gimli::DW_AT_data_member_location)?.unwrap_or(0),
                            ty: None,
                            embedded: flag(DW_AT_GO_EMBEDDED_FIELD)?.unwrap_or(false),
                        };
                        let r = reference(gimli::DW_AT_type)?;
                        self.raw_types[i].fields.push((field, r));
                    }
                }
                gimli::DW_TAG_subrange_type => {
                    if let Parent::Type(i) = parent {
                        let count = match udata(gimli::DW_AT_count)? {
                            Some(c) => Some(c),
                            None => udata(gimli::DW_AT_upper_bound)?.map(|u| u.saturating_add(1)),
                        };
                        self.raw_types[i].count = count;
                    }
                }
                gimli::DW_TAG_subprogram => {
                    let low_pc = match die.attr_value(gimli::DW_AT_low_pc)? {
                        Some(AttributeValue::Addr(a)) => Some(a),
                        Some(AttributeValue::DebugAddrIndex(i)) => Some(dwarf.address(unit, i)?),
                        _ => None,
                    };
                    if let (Some(pc), Some(keep)) = (low_pc, self.keep) {
                        if !keep(pc) {
                            // Not wanted: neither it nor its parameters are recorded.
                            parents.push(Parent::Other);
                            continue;
                        }
                    }
                    let decl_file = match udata(gimli::DW_AT_decl_file)? {
                        Some(index) => file_name(dwarf, unit, index),
                        None => None,
                    };
                    self.funcs.push(RawFunc {
                        offset,
                        name: name(gimli::DW_AT_name)?,
                        low_pc,
                        inline: die.attr_value(gimli::DW_AT_inline)?.is_some(),
                        origin: reference(gimli::DW_AT_abstract_origin)?,
                        decl_file,
                        decl_line: udata(gimli::DW_AT_decl_line)?.and_then(|l| u32::try_from(l).ok()),
                        params: Vec::new(),
                    });
                    self.func_at.insert(offset, self.funcs.len() - 1);
                    me = Parent::Func(self.funcs.len() - 1);
                }
                gimli::DW_TAG_formal_parameter => {
                    if let Parent::Func(i) = parent {
                        let entry_location = match (self.funcs[i].low_pc, die.attr_value(gimli::DW_AT_location)?) {
                            (Some(pc), Some(v)) => entry_location(dwarf, unit, v, pc).unwrap_or(None),
                            _ => None,
                        };
                        let p = RawParam {
                            name: name(gimli::DW_AT_name)?,
                            ty: reference(gimli::DW_AT_type)?,
                            is_result: flag(gimli::DW_AT_variable_parameter)?,
                            origin: reference(gimli::DW_AT_abstract_origin)?,
                            entry_location,
                        };
                        self.funcs[i].params.push((offset, p));
                    }
                }
                _ => {}
            }
            parents.push(me);
        }
        Ok(())
    }

    /// Go before 1.21 gives no `DW_AT_decl_line` on functions, and concrete instances of
    /// inlined functions have no `DW_AT_decl_file`: take them from the line table row at the
    /// function's first instruction.
    fn fill_lines_from_line_program(
        &mut self,
        dwarf: &gimli::Dwarf<R<'_>>,
        unit: &gimli::Unit<R<'_>>,
        first: usize,
    ) -> Result<(), DwarfError> {
        let want: HashMap<u64, usize> = (first..self.funcs.len())
            .filter(|&i| self.funcs[i].decl_line.is_none() || self.funcs[i].decl_file.is_none())
            .filter_map(|i| self.funcs[i].low_pc.map(|pc| (pc, i)))
            .collect();
        if want.is_empty() {
            return Ok(());
        }
        let Some(program) = unit.line_program.clone() else {
            return Ok(());
        };
        let mut rows = program.rows();
        let mut done = HashSet::new();
        while let Some((_, row)) = rows.next_row()? {
            let Some(&i) = want.get(&row.address()) else { continue };
            if !done.insert(i) {
                continue;
            }
            let f = &mut self.funcs[i];
            if f.decl_line.is_none() {
                f.decl_line = row.line().and_then(|l| u32::try_from(l.get()).ok());
            }
            if f.decl_file.is_none() {
                f.decl_file = file_name(dwarf, unit, row.file_index());
            }
        }
        Ok(())
    }

    fn link_types(&mut self) {
        let lookup =
            |o: Option<DebugInfoOffset>, at: &HashMap<DebugInfoOffset, TypeId>| o.and_then(|o| at.get(&o).copied());
        let raw = std::mem::take(&mut self.raw_types);
        for r in &raw {
            let target = lookup(r.target, &self.type_at);
            let kind = match (r.tag, r.go_kind) {
                (_, Some(1)) => Kind::Bool,
                (_, Some(2..=6)) => Kind::Int,
                (_, Some(7..=11)) => Kind::Uint,
                (_, Some(12)) => Kind::Uintptr,
                (_, Some(13 | 14)) => Kind::Float,
                (_, Some(15 | 16)) => Kind::Complex,
                (_, Some(18)) => Kind::Chan,
                (_, Some(19)) => Kind::Func,
                (_, Some(21)) => Kind::Map,
                (_, Some(24)) => Kind::String,
                (_, Some(26)) => Kind::UnsafePointer,
                (gimli::DW_TAG_structure_type, Some(23)) => {
                    Kind::Slice(lookup(r.elem, &self.type_at).or_else(|| {
                        // No DW_AT_go_elem: the element is the target of the `array` field.
                        let (_, ptr) = r.fields.iter().find(|(f, _)| f.name == "array")?;
                        let p = self.types.get(lookup(*ptr, &self.type_at)?)?;
                        match p.kind {
                            Kind::Pointer(t) => t,
                            _ => None,
                        }
                    }))
                }
                (gimli::DW_TAG_typedef, Some(20)) => {
                    let tname = self.types.name(target);
                    Kind::Interface { empty: tname == "runtime.eface" }
                }
                (gimli::DW_TAG_structure_type, Some(20)) => {
                    Kind::Interface { empty: r.fields.first().is_some_and(|(f, _)| f.name == "_type") }
                }
                (gimli::DW_TAG_base_type, _) => match r.encoding {
                    Some(gimli::DW_ATE_boolean) => Kind::Bool,
                    Some(gimli::DW_ATE_signed | gimli::DW_ATE_signed_char) => Kind::Int,
                    Some(gimli::DW_ATE_unsigned | gimli::DW_ATE_unsigned_char) => Kind::Uint,
                    Some(gimli::DW_ATE_float) => Kind::Float,
                    Some(gimli::DW_ATE_complex_float) => Kind::Complex,
                    _ => Kind::Unknown,
                },
                (gimli::DW_TAG_pointer_type, _) => Kind::Pointer(target),
                (gimli::DW_TAG_structure_type, _) => {
                    let name = &self.types.get(r.id).map(|t| t.name.as_str()).unwrap_or("");
                    if *name == "string" {
                        Kind::String
                    } else {
                        let fields = r
                            .fields
                            .iter()
                            .map(|(f, ty)| Field { ty: lookup(*ty, &self.type_at), ..f.clone() })
                            .collect();
                        Kind::Struct(fields)
                    }
                }
                (gimli::DW_TAG_array_type, _) => Kind::Array { elem: target, len: r.count.unwrap_or(0) },
                (gimli::DW_TAG_subroutine_type, _) => Kind::Func,
                (gimli::DW_TAG_typedef, _) => Kind::Typedef(target),
                _ => Kind::Unknown,
            };
            // Pointer-like kinds are one word whatever DWARF says about the typedef.
            // Go's DWARF gives no byte size on typedefs that carry a kind (interfaces, maps).
            let fixed = match kind {
                Kind::Map | Kind::Chan | Kind::Func | Kind::UnsafePointer | Kind::Pointer(_) => Some(8),
                Kind::Interface { .. } | Kind::String => Some(16),
                Kind::Slice(_) => Some(24),
                _ => None,
            };
            if let Some(t) = self.types.get_mut(r.id) {
                t.kind = kind;
                if let Some(size) = fixed {
                    t.size = size;
                }
            }
        }
        // Typedefs take the size of what they name.
        for r in &raw {
            if r.tag == gimli::DW_TAG_typedef {
                if let Some(size) = self.types.size(r.id) {
                    if let Some(t) = self.types.get_mut(r.id) {
                        if matches!(t.kind, Kind::Typedef(_)) {
                            t.size = size;
                        }
                    }
                }
            }
        }
    }

    fn link_functions(self) -> DwarfInfo {
        let Loader { types, funcs, func_at, type_at, .. } = self;
        // Parameters of abstract functions, by offset: concrete ones refer to them.
        let mut abstract_params: HashMap<DebugInfoOffset, &RawParam> = HashMap::new();
        for f in funcs.iter().filter(|f| f.inline) {
            for (o, p) in &f.params {
                abstract_params.insert(*o, p);
            }
        }
        let mut info = DwarfInfo { types, ..Default::default() };
        let mut has_concrete: HashSet<DebugInfoOffset> = HashSet::new();
        for f in &funcs {
            let Some(low_pc) = f.low_pc else { continue };
            let origin = f.origin.and_then(|o| func_at.get(&o)).and_then(|&i| funcs.get(i));
            if let Some(o) = origin {
                has_concrete.insert(o.offset);
            }
            let Some(name) = f.name.clone().or_else(|| origin.and_then(|o| o.name.clone())) else {
                continue;
            };
            // The concrete instance of an inlined function may omit parameters the compiler
            // dropped, and the abstract one may omit unnamed results: take the abstract list
            // (matched with concrete children), add the concrete children it lacks, and keep
            // receiver and arguments before results.
            let mut params_src: Vec<(&RawParam, Option<&RawParam>)> = Vec::new();
            if let Some(o) = origin {
                for (off, ap) in &o.params {
                    let concrete = f.params.iter().find(|(_, cp)| cp.origin == Some(*off)).map(|(_, cp)| cp);
                    params_src.push((ap, concrete));
                }
            }
            for (_, p) in &f.params {
                let known_origin =
                    p.origin.is_some_and(|o| origin.is_some_and(|of| of.params.iter().any(|(off, _)| *off == o)));
                if !known_origin {
                    params_src.push((p.origin.and_then(|o| abstract_params.get(&o).copied()).unwrap_or(p), Some(p)));
                }
            }
            let is_result =
                |d: &RawParam, c: Option<&RawParam>| d.is_result.or(c.and_then(|c| c.is_result)).unwrap_or(false);
            params_src.sort_by_key(|(d, c)| is_result(d, *c));
            let mut params: Vec<Param> = params_src
                .into_iter()
                .map(|(decl, concrete)| Param {
                    name: decl.name.clone().unwrap_or_default(),
                    ty: decl.ty.or(concrete.and_then(|c| c.ty)).and_then(|o| type_at.get(&o).copied()).unwrap_or(0),
                    is_result: is_result(decl, concrete),
                    entry_location: concrete.and_then(|c| c.entry_location.clone()),
                })
                .collect();
            // Go 1.26+ lists a blank result twice (`~r0`, `~r0` for `(_ *Response, err error)`,
            // net/http.(*Transport).roundTrip); the copy would shift every later result.
            let mut unnamed = HashSet::new();
            params.retain(|p| !p.is_result || !p.name.starts_with("~r") || unnamed.insert(p.name.clone()));
            info.add_function(FunctionInfo {
                name,
                low_pc,
                decl_file: f.decl_file.clone().or_else(|| origin.and_then(|o| o.decl_file.clone())),
                decl_line: origin.and_then(|o| o.decl_line).or(f.decl_line),
                params,
            });
        }
        for f in funcs.iter().filter(|f| f.inline && !has_concrete.contains(&f.offset)) {
            if let Some(name) = &f.name {
                if !info.by_name.contains_key(name) {
                    info.inlined_only.insert(name.clone());
                }
            }
        }
        info
    }
}

/// Path of file `index` of the unit's line table.
fn file_name(dwarf: &gimli::Dwarf<R<'_>>, unit: &gimli::Unit<R<'_>>, index: u64) -> Option<String> {
    let program = unit.line_program.as_ref()?;
    let header = program.header();
    let file = header.file(index)?;
    let path = dwarf.attr_string(unit, file.path_name()).ok()?.to_string_lossy().into_owned();
    if path.starts_with('/') {
        return Some(path);
    }
    let dir = file
        .directory(header)
        .and_then(|d| dwarf.attr_string(unit, d).ok())
        .map(|d| d.to_string_lossy().into_owned())
        .unwrap_or_default();
    Some(if dir.is_empty() { path } else { format!("{dir}/{path}") })
}

/// The location of a parameter at address `pc` (the function entry), from its
/// `DW_AT_location` (expression or location list).
fn entry_location(
    dwarf: &gimli::Dwarf<R<'_>>,
    unit: &gimli::Unit<R<'_>>,
    value: AttributeValue<R<'_>>,
    pc: u64,
) -> Result<Option<Vec<LocPiece>>, gimli::Error> {
    let expr = match value {
        AttributeValue::Exprloc(e) => Some(e),
        v => {
            let Some(mut list) = dwarf.attr_locations(unit, v)? else {
                return Ok(None);
            };
            let mut found = None;
            while let Some(entry) = list.next()? {
                if entry.range.begin <= pc && pc < entry.range.end {
                    found = Some(entry.data);
                    break;
                }
            }
            found
        }
    };
    let Some(expr) = expr else { return Ok(None) };
    let mut pieces = Vec::new();
    let mut pending: Option<Loc> = None;
    let mut ops = expr.operations(unit.encoding());
    while let Some(op) = ops.next()? {
        match op {
            gimli::Operation::Register { register } => pending = Some(Loc::Reg(register.0)),
            gimli::Operation::FrameOffset { offset } => {
                pending = Some(match pending {
                    Some(Loc::Cfa(base)) => Loc::Cfa(base.saturating_add(offset)),
                    _ => Loc::Cfa(offset),
                })
            }
            gimli::Operation::CallFrameCFA => pending = Some(Loc::Cfa(0)),
            gimli::Operation::Piece { size_in_bits, bit_offset: None } => {
                pieces.push(LocPiece { loc: pending.take().unwrap_or(Loc::Empty), size: Some(size_in_bits / 8) })
            }
            _ => return Ok(None),
        }
    }
    if let Some(loc) = pending {
        pieces.push(LocPiece { loc, size: None });
    }
    Ok(Some(pieces))
}

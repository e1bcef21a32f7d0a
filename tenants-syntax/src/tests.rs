use quote::quote;

use super::*;

/// Parses `attr` and `item` from source text, so that error spans have locations.
fn parse(attr: &str, item: &str) -> syn::Result<MarkedItem> {
    let attr: TokenStream = attr.parse().expect("attribute tokens");
    let item: TokenStream = item.parse().expect("item tokens");
    parse_marked_tokens(attr, item)
}

fn table(attr: &str, item: &str) -> MarkedTable {
    match parse(attr, item) {
        Ok(MarkedItem::Table(table)) => table,
        other => panic!("expected a table, got {other:?}"),
    }
}

fn model(attr: &str, item: &str) -> MarkedStruct {
    match parse(attr, item) {
        Ok(MarkedItem::Struct(model)) => model,
        other => panic!("expected a struct, got {other:?}"),
    }
}

/// The error's message and the source text it points at.
fn error(attr: &str, item: &str) -> (String, String) {
    let err = parse(attr, item).expect_err("expected an error");
    let text = err.span().source_text().expect("span with source text");
    (err.to_string(), text)
}

const TODO: &str = "diesel::table! { todo_item (id) { id -> Int4, name -> Text, tenant -> Text } }";

#[test]
fn args_empty() {
    let args: RlsArgs = syn::parse2(quote!()).unwrap();
    assert_eq!(args, RlsArgs::default());
    assert_eq!(args.column_name(), "tenant");
}

#[test]
fn args_column() {
    let args: RlsArgs = syn::parse2(quote!(column = org_id)).unwrap();
    assert_eq!(args.column.unwrap(), "org_id");
    let args: RlsArgs = syn::parse2(quote!(column = r#type,)).unwrap();
    assert_eq!(args.column_name(), "type");
}

#[test]
fn args_unknown_option() {
    let (message, at) = error("foo = bar", TODO);
    assert!(message.starts_with("unknown option `foo`"), "{message}");
    assert!(
        message.contains("help: the only option is `column = <ident>`"),
        "{message}"
    );
    assert_eq!(at, "foo");
}

#[test]
fn args_duplicate_and_string() {
    let (message, at) = error("column = a, column = b", TODO);
    assert!(
        message.starts_with("duplicate option `column`"),
        "{message}"
    );
    assert_eq!(at, "column");
    let (message, at) = error("column = \"org_id\"", TODO);
    assert!(
        message.contains("help: write `column = org_id`"),
        "{message}"
    );
    assert_eq!(at, "\"org_id\"");
}

#[test]
fn args_from_attribute() {
    let attr: syn::Attribute = syn::parse_quote!(#[with_rls]);
    assert_eq!(RlsArgs::from_attribute(&attr).unwrap(), RlsArgs::default());
    let attr: syn::Attribute = syn::parse_quote!(#[tenants_core::with_rls(column = org)]);
    assert!(is_with_rls_attribute(&attr));
    assert_eq!(RlsArgs::from_attribute(&attr).unwrap().column_name(), "org");
    let attr: syn::Attribute = syn::parse_quote!(#[with_rls = "x"]);
    assert!(RlsArgs::from_attribute(&attr).is_err());
    let attr: syn::Attribute = syn::parse_quote!(#[derive(Debug)]);
    assert!(!is_with_rls_attribute(&attr));
}

#[test]
fn table_default_column() {
    let table = table("", TODO);
    assert_eq!(
        table,
        MarkedTable {
            schema: "public".into(),
            name: "todo_item".into(),
            module: syn::parse_quote!(todo_item),
            column: syn::parse_quote!(tenant),
            column_sql_name: "tenant".into(),
            sql_type: TenantSqlType::Text,
        }
    );
    let item = MarkedItem::Table(table);
    assert_eq!(item.schema(), "public");
    assert_eq!(item.table_name(), "todo_item");
    assert_eq!(item.tenant_column(), "tenant");
    assert_eq!(item.sql_type(), Some(TenantSqlType::Text));
}

#[test]
fn table_custom_column_schema_and_sql_names() {
    let table = table(
        "column = org",
        r#"table! {
            use diesel::sql_types::*;
            /// Items.
            #[sql_name = "todo_items"]
            app.todo (id) {
                id -> Int4,
                #[sql_name = "org_id"]
                org -> diesel::sql_types::Uuid,
            }
        }"#,
    );
    assert_eq!(table.schema, "app");
    assert_eq!(table.name, "todo_items");
    assert_eq!(table.module, "todo");
    assert_eq!(table.column, "org");
    assert_eq!(table.column_sql_name, "org_id");
    assert_eq!(table.sql_type, TenantSqlType::Uuid);
}

#[test]
fn table_supported_types() {
    for (name, expected) in [
        ("Text", TenantSqlType::Text),
        ("VarChar", TenantSqlType::VarChar),
        ("Varchar", TenantSqlType::VarChar),
        ("Int4", TenantSqlType::Int4),
        ("Integer", TenantSqlType::Int4),
        ("Int8", TenantSqlType::Int8),
        ("BigInt", TenantSqlType::Int8),
        ("Uuid", TenantSqlType::Uuid),
        ("sql_types::BigInt", TenantSqlType::Int8),
        ("::diesel::sql_types::Integer", TenantSqlType::Int4),
    ] {
        let item = format!("table! {{ t (id) {{ id -> Int4, tenant -> {name} }} }}");
        assert_eq!(table("", &item).sql_type, expected, "{name}");
    }
    let item = "table! { t (id) { id -> Int4, #[max_length = 64] tenant -> Varchar } }";
    assert_eq!(table("", item).sql_type, TenantSqlType::VarChar);
}

#[test]
fn table_raw_column() {
    let table = table(
        "column = r#type",
        "table! { t (id) { id -> Int4, r#type -> Text } }",
    );
    assert_eq!(table.column_sql_name, "type");
}

#[test]
fn table_missing_default_column() {
    let (message, at) = error(
        "",
        "diesel::table! { todo_item (id) { id -> Int4, name -> Text } }",
    );
    assert!(
        message.starts_with("table `todo_item` has no tenant column `tenant`"),
        "{message}"
    );
    assert!(message.contains("help: the columns of `todo_item` are `id`, `name`; name the tenant column with #[with_rls(column = <ident>)]"), "{message}");
    assert_eq!(at, "todo_item");
}

#[test]
fn table_missing_named_column() {
    let (message, at) = error("column = org_id", TODO);
    assert!(
        message.starts_with("table `todo_item` has no tenant column `org_id`"),
        "{message}"
    );
    assert!(message.contains("`id`, `name`, `tenant`"), "{message}");
    assert_eq!(at, "org_id");
}

#[test]
fn table_nullable_column() {
    let (message, at) = error(
        "",
        "table! { todo_item (id) { id -> Int4, tenant -> Nullable<Text> } }",
    );
    assert!(
        message.starts_with("the tenant column `tenant` is nullable"),
        "{message}"
    );
    assert!(
        message.contains("help: declare it NOT NULL (`tenant -> Text`)"),
        "{message}"
    );
    assert_eq!(at, "Nullable<Text>");
    let (message, _) = error(
        "",
        "table! { todo_item (id) { id -> Int4, tenant -> diesel::sql_types::Nullable<diesel::sql_types::Uuid> } }",
    );
    assert!(
        message.contains("`tenant -> diesel::sql_types::Uuid`"),
        "{message}"
    );
}

#[test]
fn table_unsupported_type() {
    for ty in ["Timestamp", "Array<Text>", "Jsonb", "Bool"] {
        let item = format!("table! {{ t (id) {{ id -> Int4, tenant -> {ty} }} }}");
        let (message, at) = error("", &item);
        assert!(
            message.starts_with(&format!(
                "the tenant column `tenant` has SQL type `{ty}`, which #[with_rls] does not support"
            )),
            "{message}"
        );
        assert!(message.contains("help: a tenant column is one of Text, VarChar (Varchar), Int4 (Integer), Int8 (BigInt), Uuid"), "{message}");
        assert_eq!(at, ty);
    }
}

#[test]
fn table_syntax_error() {
    let (message, at) = error("", "table! { t (id) { id -> , tenant -> Text } }");
    assert!(
        message.starts_with("invalid `table!` syntax: expected identifier"),
        "{message}"
    );
    assert!(
        message.contains("help: see the `diesel::table!` documentation"),
        "{message}"
    );
    assert_eq!(at, ",");
}

#[test]
fn struct_form() {
    let model = model(
        "",
        "#[derive(Insertable)] #[diesel(table_name = todo_item)] struct NewItem<'a> { name: &'a str, tenant: &'a str }",
    );
    assert_eq!(model.ident, "NewItem");
    assert_eq!(model.table_path, syn::parse_quote!(todo_item));
    assert_eq!(model.schema, "public");
    assert_eq!(model.name, "todo_item");
    assert_eq!(model.field, "tenant");
    assert_eq!(model.field_ty, syn::parse_quote!(&'a str));
    assert_eq!(model.column, "tenant");
    let item = MarkedItem::Struct(model);
    assert_eq!(item.table_name(), "todo_item");
    assert_eq!(item.tenant_column(), "tenant");
    assert_eq!(item.sql_type(), None);
}

#[test]
fn struct_form_column_name_and_other_options() {
    let model = model(
        "column = org_id",
        r#"
        #[derive(Queryable, Selectable)]
        #[diesel(check_for_backend(diesel::pg::Pg), serialize_as = Foo<A, B>)]
        #[diesel(primary_key(id), table_name = crate::schema::todo_item, treat_none_as_null = true)]
        pub struct TodoItem {
            pub id: i32,
            #[diesel(serialize_as = String, column_name = org_id)]
            pub organisation: uuid::Uuid,
        }"#,
    );
    assert_eq!(
        model.table_path,
        syn::parse_quote!(crate::schema::todo_item)
    );
    assert_eq!(model.name, "todo_item");
    assert_eq!(model.field, "organisation");
    assert_eq!(model.column, "org_id");
    assert_eq!(model.field_ty, syn::parse_quote!(uuid::Uuid));
}

#[test]
fn struct_form_string_column_name() {
    let model = model(
        "",
        r#"#[diesel(table_name = t)] struct T { #[diesel(column_name = "tenant")] org: String }"#,
    );
    assert_eq!(model.field, "org");
    assert_eq!(model.column, "tenant");
    let raw = self::model(
        "column = r#type",
        r#"#[diesel(table_name = t)] struct T { #[diesel(column_name = "type")] kind: String }"#,
    );
    assert_eq!(raw.column.unraw(), "type");
}

#[test]
fn struct_without_table_name() {
    let (message, at) = error(
        "",
        "#[derive(Insertable)] struct NewItem { tenant: String }",
    );
    assert!(
        message.starts_with("struct `NewItem` has no #[diesel(table_name = ...)]"),
        "{message}"
    );
    assert!(message.contains("help: "), "{message}");
    assert_eq!(at, "NewItem");
}

#[test]
fn struct_missing_field() {
    let (message, at) = error(
        "",
        "#[diesel(table_name = todo_item)] struct NewItem { name: String, #[diesel(column_name = org)] o: i32 }",
    );
    assert!(
        message.starts_with("struct `NewItem` has no field for the tenant column `tenant`"),
        "{message}"
    );
    assert!(
        message.contains("the struct maps the columns `name`, `org`"),
        "{message}"
    );
    assert_eq!(at, "NewItem");
    let (message, at) = error(
        "column = org_id",
        "#[diesel(table_name = todo_item)] struct NewItem { tenant: String }",
    );
    assert!(
        message.starts_with("struct `NewItem` has no field for the tenant column `org_id`"),
        "{message}"
    );
    assert_eq!(at, "org_id");
}

#[test]
fn struct_tuple() {
    let (message, at) = error(
        "",
        "#[diesel(table_name = todo_item)] struct NewItem(String);",
    );
    assert!(
        message.starts_with("#[with_rls] needs a struct with named fields"),
        "{message}"
    );
    assert_eq!(at, "NewItem");
}

#[test]
fn neither_table_nor_struct() {
    for (item, name) in [
        ("enum Tenant { A }", "Tenant"),
        ("fn tenant() {}", "tenant"),
        ("println!(\"x\");", "println"),
    ] {
        let (message, at) = error("", item);
        assert!(message.starts_with("#[with_rls] goes on a `diesel::table!` invocation, on a `use` of its module, or on a struct with #[diesel(table_name = ...)]"), "{message}");
        assert_eq!(at, name);
    }
}

#[test]
fn file_marks_walks_modules_and_skips_unmarked() {
    let file: syn::File = syn::parse_str(
        r#"
        pub mod schema {
            #[with_rls]
            diesel::table! { todo_item (id) { id -> Int4, tenant -> Text } }
            diesel::table! { other (id) { id -> Int4 } }
        }
        #[tenants_core::with_rls(column = org)]
        #[diesel(table_name = schema::note)]
        struct Note { org: i64 }
        #[with_rls]
        enum Wrong {}
        #[shared]
        diesel::table! { geo.countries (code) { code -> Text } }
        #[tenants_core::shared]
        #[with_rls]
        diesel::table! { both (id) { id -> Int4, tenant -> Text } }
        "#,
    )
    .unwrap();
    let marks = file_marks(&file);
    let items = &marks.marked[..3];
    assert_eq!(
        marks.shared[0].as_ref().ok(),
        Some(&SharedTable {
            schema: "geo".into(),
            name: "countries".into()
        })
    );
    let both = marks.shared[1].as_ref().expect_err("shared and marked");
    assert!(
        both.to_string()
            .starts_with("a table cannot be both #[shared] and #[with_rls]")
    );
    assert_eq!(items.len(), 3);
    let names: Vec<_> = items
        .iter()
        .filter_map(|item| item.as_ref().ok())
        .map(|item| (item.table_name().to_owned(), item.tenant_column()))
        .collect();
    assert_eq!(
        names,
        [
            ("todo_item".to_owned(), "tenant".to_owned()),
            ("note".to_owned(), "org".to_owned())
        ]
    );
    assert!(items[2].is_err());
}

#[test]
fn table_body_parses_or_not() {
    let good: syn::ItemMacro = syn::parse_str(TODO).unwrap();
    assert!(is_table_macro(&good.mac));
    assert!(table_body_parses(&good.mac));
    let bad: syn::ItemMacro = syn::parse_str("table! { t (id) { id -> } }").unwrap();
    assert!(!table_body_parses(&bad.mac));
    let other: syn::ItemMacro = syn::parse_str("println! { x }").unwrap();
    assert!(!is_table_macro(&other.mac));
}

#[test]
fn shared_takes_a_table_and_no_arguments() {
    let parse =
        |attr: &str, item: &str| parse_shared_tokens(attr.parse().unwrap(), item.parse().unwrap());
    let table = parse(
        "",
        "diesel::table! { #[sql_name = \"iso_countries\"] countries (code) { code -> Text } }",
    )
    .unwrap();
    assert_eq!(
        (table.schema.as_str(), table.name.as_str()),
        ("public", "iso_countries")
    );
    let args = parse(
        "readonly",
        "diesel::table! { countries (code) { code -> Text } }",
    )
    .unwrap_err();
    assert!(args.to_string().starts_with("#[shared] takes no arguments"));
    let not_table = parse("", "struct Country;").unwrap_err();
    assert!(
        not_table
            .to_string()
            .starts_with("#[shared] goes on a `diesel::table!` invocation")
    );
}

#[test]
fn the_use_form_names_the_module_and_its_binding() {
    let marked = |args: &str, item: &str| {
        let args: RlsArgs = syn::parse_str(args).expect("args");
        let item: syn::Item = syn::parse_str(item).expect("item");
        parse_marked(&args, &item)
    };
    let Ok(MarkedItem::Use(found)) = marked("", "use crate::schema::todo_item;") else {
        panic!("a use of one module is the use form");
    };
    assert_eq!(
        (
            found.binding.to_string(),
            found.name.as_str(),
            found.schema.as_str()
        ),
        ("todo_item".to_string(), "todo_item", "public")
    );
    assert_eq!(found.column.to_string(), "tenant");
    let Ok(MarkedItem::Use(renamed)) = marked(
        "column = org_id",
        "pub use super::schema::r#invoice as invoices;",
    ) else {
        panic!("a renamed use is the use form");
    };
    assert_eq!(
        (renamed.binding.to_string(), renamed.name.as_str()),
        ("invoices".to_string(), "invoice")
    );
    assert_eq!(MarkedItem::Use(renamed).tenant_column(), "org_id");
    for several in [
        "use schema::{a, b};",
        "use schema::*;",
        "use crate::schema::{self};",
    ] {
        let error = marked("", several).expect_err(several).to_string();
        assert!(error.contains("marks one table"), "{several}: {error}");
    }
}

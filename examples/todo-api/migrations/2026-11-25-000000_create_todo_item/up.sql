CREATE TABLE todo_item (
    id serial PRIMARY KEY,
    name text NOT NULL,
    tenant text NOT NULL
);

-- Every query of a tenant transaction is filtered by tenant (by the RLS policy, and
-- explicitly by the application): this index serves both.
CREATE INDEX todo_item_tenant_id_idx ON todo_item (tenant, id);

DO $tenants$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tenants_user') THEN
    CREATE ROLE "tenants_user" NOLOGIN;
  END IF;
END $tenants$;
DO $tenants$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tenants_admin') THEN
    CREATE ROLE "tenants_admin" NOLOGIN;
  END IF;
END $tenants$;
GRANT "tenants_user" TO CURRENT_USER;
GRANT "tenants_admin" TO CURRENT_USER;
GRANT USAGE ON SCHEMA "public" TO "tenants_user", "tenants_admin";
ALTER TABLE "public"."todo_item" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "public"."todo_item" FORCE ROW LEVEL SECURITY;
CREATE POLICY "tenants_isolation" ON "public"."todo_item" AS PERMISSIVE FOR ALL TO PUBLIC
  USING      ("tenant" = (SELECT NULLIF(current_setting('tenants.current_tenant', true), '')::text))
  WITH CHECK ("tenant" = (SELECT NULLIF(current_setting('tenants.current_tenant', true), '')::text));
CREATE POLICY "tenants_admin" ON "public"."todo_item" AS PERMISSIVE FOR ALL TO "tenants_admin"
  USING ((SELECT current_user) = 'tenants_admin') WITH CHECK ((SELECT current_user) = 'tenants_admin');
ALTER TABLE "public"."todo_item" ALTER COLUMN "tenant" SET DEFAULT NULLIF(current_setting('tenants.current_tenant', true), '')::text;
GRANT SELECT, INSERT, UPDATE, DELETE ON "public"."todo_item" TO "tenants_user", "tenants_admin";
GRANT USAGE, SELECT ON SEQUENCE "public"."todo_item_id_seq" TO "tenants_user", "tenants_admin";

REVOKE USAGE, SELECT ON SEQUENCE "public"."todo_item_id_seq" FROM "tenants_user", "tenants_admin";
REVOKE SELECT, INSERT, UPDATE, DELETE ON "public"."todo_item" FROM "tenants_user", "tenants_admin";
ALTER TABLE "public"."todo_item" ALTER COLUMN "tenant" DROP DEFAULT;
DROP POLICY "tenants_admin" ON "public"."todo_item";
DROP POLICY "tenants_isolation" ON "public"."todo_item";
ALTER TABLE "public"."todo_item" NO FORCE ROW LEVEL SECURITY;
ALTER TABLE "public"."todo_item" DISABLE ROW LEVEL SECURITY;
REVOKE USAGE ON SCHEMA "public" FROM "tenants_user", "tenants_admin";
REVOKE "tenants_admin" FROM CURRENT_USER;
REVOKE "tenants_user" FROM CURRENT_USER;
DO $tenants$ BEGIN
  IF EXISTS (SELECT FROM pg_roles r WHERE r.rolname = 'tenants_admin'
      AND NOT EXISTS (SELECT FROM pg_shdepend d WHERE d.refclassid = 'pg_authid'::regclass AND d.refobjid = r.oid)
      AND NOT EXISTS (SELECT FROM pg_auth_members m WHERE r.oid IN (m.roleid, m.member))) THEN
    DROP ROLE "tenants_admin";
  END IF;
END $tenants$;
DO $tenants$ BEGIN
  IF EXISTS (SELECT FROM pg_roles r WHERE r.rolname = 'tenants_user'
      AND NOT EXISTS (SELECT FROM pg_shdepend d WHERE d.refclassid = 'pg_authid'::regclass AND d.refobjid = r.oid)
      AND NOT EXISTS (SELECT FROM pg_auth_members m WHERE r.oid IN (m.roleid, m.member))) THEN
    DROP ROLE "tenants_user";
  END IF;
END $tenants$;

-- Only a verified email is an identity (issue #9): operator commands look
-- users up by email, so an address a provider did not verify must never
-- match, claim, or block one. Operator-created users (no identity yet) are
-- vouched for by the operator; users from sign-ins are re-marked at their
-- next sign-in. The unique index covers verified addresses only, so an
-- unverified claim cannot lock the real owner out.
ALTER TABLE users ADD COLUMN email_verified BOOLEAN NOT NULL DEFAULT FALSE;
UPDATE users SET email_verified = TRUE WHERE issuer IS NULL;
DROP INDEX users_email;
CREATE UNIQUE INDEX users_verified_email ON users (email) WHERE email_verified;

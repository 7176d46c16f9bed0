/** The directory of the -ldap{} / -radius{} / group tests: users, passwords and groups. */
import { SUFFIX } from './slapd.js';

export const LDAP_USERS = { alice: 'alice wonder(land)*', bob: 'b0b-secret-pw', carol: 'carol-pass-77' };
export const RADIUS_SECRET = 'radius-shared,secret';
export const RADIUS_USERS = { dave: 'dave radius pw', erin: 'erin-pass-radius' };

export function directoryLdif(): string {
  const person = (uid: string, pw: string) =>
    `dn: uid=${uid},ou=people,${SUFFIX}\nobjectClass: inetOrgPerson\nuid: ${uid}\ncn: ${uid}\nsn: ${uid}\nuserPassword: ${pw}\n`;
  return [
    `dn: ${SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n`,
    `dn: ou=people,${SUFFIX}\nobjectClass: organizationalUnit\nou: people\n`,
    `dn: ou=groups,${SUFFIX}\nobjectClass: organizationalUnit\nou: groups\n`,
    ...Object.entries(LDAP_USERS).map(([u, p]) => person(u, p)),
    `dn: cn=staff,ou=groups,${SUFFIX}\nobjectClass: groupOfNames\ncn: staff\nmember: uid=alice,ou=people,${SUFFIX}\nmember: uid=carol,ou=people,${SUFFIX}\n`,
    `dn: cn=admins,ou=groups,${SUFFIX}\nobjectClass: groupOfNames\ncn: admins\nmember: uid=alice,ou=people,${SUFFIX}\n`,
    `dn: cn=guests,ou=groups,${SUFFIX}\nobjectClass: posixGroup\ncn: guests\ngidNumber: 5000\nmemberUid: bob\n`,
  ].join('\n');
}

export function radiusUsers(): string {
  return `dave Cleartext-Password := "${RADIUS_USERS.dave}"\n      Filter-Id = "staff"\nerin Cleartext-Password := "${RADIUS_USERS.erin}"\n`;
}


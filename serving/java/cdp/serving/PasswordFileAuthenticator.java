package cdp.serving;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.GeneralSecurityException;
import java.security.MessageDigest;
import java.util.Arrays;
import java.util.Base64;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import javax.crypto.SecretKeyFactory;
import javax.crypto.spec.PBEKeySpec;
import javax.security.sasl.AuthenticationException;
import org.apache.hive.service.auth.PasswdAuthenticationProvider;

/**
 * HiveServer2 CUSTOM authentication against a file of salted PBKDF2-SHA256 password hashes.
 *
 * <p>One user a line, {@code name:pbkdf2_sha256$iterations$salt$hash} (salt and hash base64), as
 * {@code cdp serve-user add} writes it. The file is read at every login, so a user added or removed
 * applies to the next connection without a restart. System properties (set by {@code cdp serve}: Hive
 * builds this class from a fresh HiveConf, not the server's):
 * {@code cdp.serving.users} the file; {@code cdp.serving.allowed} (optional) the comma-separated
 * names this server admits (the users of a role); {@code cdp.serving.audit} the audit log.
 */
public final class PasswordFileAuthenticator implements PasswdAuthenticationProvider {
  static final String SCHEME = "pbkdf2_sha256";
  // A hash computed for unknown users too, so the time taken does not tell which names exist.
  private static final String DECOY = SCHEME + "$600000$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

  @Override
  public void Authenticate(String user, String password) throws AuthenticationException {
    String stored = null;
    try {
      stored = lookup(user);
    } catch (IOException e) {
      AuditLog.write("login_failed", user, null, null, "users file unreadable: " + e.getMessage());
      throw new AuthenticationException("authentication is not available", e);
    }
    boolean known = stored != null && admitted(user);
    boolean valid = matches(password == null ? "" : password, known ? stored : DECOY);
    if (!(known && valid)) {
      AuditLog.write("login_failed", user, null, null, null);
      throw new AuthenticationException("wrong user name or password");
    }
  }

  private static boolean admitted(String user) {
    String allowed = System.getProperty("cdp.serving.allowed");
    if (allowed == null) {
      return true;
    }
    Set<String> names = new HashSet<>(Arrays.asList(allowed.split(",")));
    return names.contains(user);
  }

  private static String lookup(String user) throws IOException {
    String file = System.getProperty("cdp.serving.users");
    if (file == null) {
      throw new IOException("system property cdp.serving.users is not set");
    }
    List<String> lines = Files.readAllLines(Path.of(file), StandardCharsets.UTF_8);
    for (String line : lines) {
      int colon = line.indexOf(':');
      if (colon > 0 && line.substring(0, colon).equals(user)) {
        return line.substring(colon + 1).trim();
      }
    }
    return null;
  }

  /** Whether {@code password} hashes to {@code stored}; a malformed entry matches nothing. */
  static boolean matches(String password, String stored) {
    String[] parts = stored.split("\\$");
    if (parts.length != 4 || !parts[0].equals(SCHEME)) {
      return false;
    }
    try {
      int iterations = Integer.parseInt(parts[1]);
      byte[] salt = Base64.getDecoder().decode(parts[2]);
      byte[] expected = Base64.getDecoder().decode(parts[3]);
      PBEKeySpec spec = new PBEKeySpec(password.toCharArray(), salt, iterations, expected.length * 8);
      byte[] actual = SecretKeyFactory.getInstance("PBKDF2WithHmacSHA256").generateSecret(spec).getEncoded();
      return MessageDigest.isEqual(actual, expected);
    } catch (IllegalArgumentException | GeneralSecurityException e) {
      return false;
    }
  }
}

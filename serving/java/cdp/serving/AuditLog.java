package cdp.serving;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.time.Instant;

/** Appends one JSON line per event to the file of system property {@code cdp.serving.audit}. */
final class AuditLog {
  private AuditLog() {}

  static synchronized void write(String event, String user, String sessionId, String operationId,
      String detail) {
    String file = System.getProperty("cdp.serving.audit");
    if (file == null) {
      return;
    }
    String line = "{\"ts\": " + quote(Instant.now().toString()) + ", \"event\": " + quote(event)
        + ", \"server\": " + quote(System.getProperty("cdp.serving.role", "analyst"))
        + ", \"user\": " + quote(user) + ", \"session\": " + quote(sessionId)
        + ", \"operation\": " + quote(operationId) + ", \"detail\": " + quote(detail) + "}\n";
    try {
      Files.writeString(Path.of(file), line, StandardCharsets.UTF_8, StandardOpenOption.CREATE,
          StandardOpenOption.APPEND);
    } catch (IOException e) {
      // An audit line that cannot be written must not pass unnoticed: the server's log has it.
      System.err.println("cdp serving: audit log " + file + " not writable: " + e.getMessage() + ": " + line);
    }
  }

  static String quote(String value) {
    if (value == null) {
      return "null";
    }
    StringBuilder out = new StringBuilder("\"");
    for (char c : value.toCharArray()) {
      switch (c) {
        case '"' -> out.append("\\\"");
        case '\\' -> out.append("\\\\");
        case '\n' -> out.append("\\n");
        case '\r' -> out.append("\\r");
        case '\t' -> out.append("\\t");
        default -> {
          if (c < 0x20) {
            out.append(String.format("\\u%04x", (int) c));
          } else {
            out.append(c);
          }
        }
      }
    }
    return out.append('"').toString();
  }
}

package cdp.serving;

import org.apache.spark.scheduler.SparkListener;
import org.apache.spark.scheduler.SparkListenerEvent;
import org.apache.spark.sql.hive.thriftserver.ui.SparkListenerThriftServerOperationError;
import org.apache.spark.sql.hive.thriftserver.ui.SparkListenerThriftServerOperationStart;
import org.apache.spark.sql.hive.thriftserver.ui.SparkListenerThriftServerSessionCreated;

/** Audits the Thrift Server's events: who connected from where, what they ran, and what failed or was refused. */
public final class AuditListener extends SparkListener {
  @Override
  public void onOtherEvent(SparkListenerEvent event) {
    if (event instanceof SparkListenerThriftServerSessionCreated e) {
      AuditLog.write("session", e.userName(), e.sessionId(), null, e.ip());
    } else if (event instanceof SparkListenerThriftServerOperationStart e) {
      AuditLog.write("statement", e.userName(), e.sessionId(), e.id(), e.statement());
    } else if (event instanceof SparkListenerThriftServerOperationError e) {
      AuditLog.write("error", null, null, e.id(), e.errorMsg());
    }
  }
}

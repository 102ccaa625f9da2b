package cdp.serving;

import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.SparkSessionExtensions;
import org.apache.spark.sql.catalyst.parser.ParserInterface;
import scala.runtime.AbstractFunction1;
import scala.runtime.AbstractFunction2;
import scala.runtime.BoxedUnit;

/**
 * {@code spark.sql.extensions=cdp.serving.ReadOnlyExtension}: every SQL statement of every session of the
 * JVM is parsed by {@link ReadOnlyParser}, which refuses all but reads once {@link #enforce()} is called.
 * {@code cdp serve} creates its views first, then enforces, then starts the Thrift Server; nothing
 * turns enforcement off again.
 */
public final class ReadOnlyExtension extends AbstractFunction1<SparkSessionExtensions, BoxedUnit> {
  private static volatile boolean enforced = false;

  public static void enforce() {
    enforced = true;
  }

  static boolean enforced() {
    return enforced;
  }

  @Override
  public BoxedUnit apply(SparkSessionExtensions extensions) {
    extensions.injectParser(new AbstractFunction2<SparkSession, ParserInterface, ParserInterface>() {
      @Override
      public ParserInterface apply(SparkSession session, ParserInterface delegate) {
        return new ReadOnlyParser(session, delegate);
      }
    });
    return BoxedUnit.UNIT;
  }
}

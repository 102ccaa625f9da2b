package cdp.serving;

import java.util.List;
import java.util.Locale;
import java.util.Set;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.catalyst.FunctionIdentifier;
import org.apache.spark.sql.catalyst.TableIdentifier;
import org.apache.spark.sql.catalyst.analysis.UnresolvedFunction;
import org.apache.spark.sql.catalyst.analysis.UnresolvedRelation;
import org.apache.spark.sql.catalyst.analysis.UnresolvedTable;
import org.apache.spark.sql.catalyst.analysis.UnresolvedTableOrView;
import org.apache.spark.sql.catalyst.analysis.UnresolvedView;
import org.apache.spark.sql.catalyst.expressions.Expression;
import org.apache.spark.sql.catalyst.expressions.SubqueryExpression;
import org.apache.spark.sql.catalyst.parser.ParameterContext;
import org.apache.spark.sql.catalyst.parser.ParseException;
import org.apache.spark.sql.catalyst.parser.ParserInterface;
import org.apache.spark.sql.catalyst.plans.logical.Command;
import org.apache.spark.sql.catalyst.plans.logical.LogicalPlan;
import org.apache.spark.sql.catalyst.plans.logical.ParsedStatement;
import org.apache.spark.sql.catalyst.trees.TreeNode;
import org.apache.spark.sql.types.DataType;
import org.apache.spark.sql.types.StructType;
import scala.collection.immutable.Seq;
import scala.jdk.javaapi.CollectionConverters;

/**
 * Spark has no authorisation of its own; this parser is the serving endpoint's. A statement (what a client
 * sends: {@code parsePlan}) passes only if it is a query (the query grammar accepts it) or a SHOW, DESCRIBE,
 * USE or SET, and if everything it reads is named in a database of the catalog. Refused: DDL and DML (no
 * command or statement node anywhere in the plan), reads by path ({@code delta.`/warehouse/...`},
 * {@code parquet.`...`}: the namespace is no database), the IDENTIFIER clause (a name only known at
 * analysis), script transforms (a shell command) and the reflection functions (any static Java method).
 * View texts are parsed by {@code parseQuery} and not checked: the server's own views read gold by path.
 */
final class ReadOnlyParser implements ParserInterface {
  private static final Set<String> COMMANDS = Set.of(
      "SetCatalogAndNamespace", "SetNamespaceCommand", "SetCommand", "ResetCommand");
  private static final Set<String> FUNCTIONS = Set.of("reflect", "java_method", "try_reflect");

  private final SparkSession session;
  private final ParserInterface delegate;

  ReadOnlyParser(SparkSession session, ParserInterface delegate) {
    this.session = session;
    this.delegate = delegate;
  }

  @Override
  public LogicalPlan parsePlan(String sql) throws ParseException {
    return check(sql, delegate.parsePlan(sql));
  }

  @Override
  public LogicalPlan parsePlanWithParameters(String sql, ParameterContext parameters) throws ParseException {
    return check(sql, delegate.parsePlanWithParameters(sql, parameters));
  }

  private LogicalPlan check(String sql, LogicalPlan plan) throws ParseException {
    if (!ReadOnlyExtension.enforced()) {
      return plan;
    }
    boolean allowedCommand = allowedCommand(plan);
    if (!allowedCommand) {
      try {
        delegate.parseQuery(sql);
      } catch (ParseException e) {
        throw refused(plan.nodeName() + " is not a query");
      }
    }
    visit(plan, allowedCommand);
    return plan;
  }

  private static boolean allowedCommand(LogicalPlan plan) {
    String name = plan.getClass().getSimpleName();
    // Delta's DESCRIBE DETAIL / HISTORY name files and operations of tables the reader may not see, and
    // DESCRIBE QUERY holds its query as a field, out of reach of the checks below.
    return COMMANDS.contains(name) || (name.startsWith("Show") || name.startsWith("Describe"))
        && !name.contains("Delta") && !name.equals("DescribeQueryCommand");
  }

  private void visit(LogicalPlan plan, boolean root) {
    if (!root && (plan instanceof Command || plan instanceof ParsedStatement)) {
      throw refused(plan.nodeName() + " inside a statement");
    }
    String name = plan.getClass().getSimpleName();
    if (name.contains("ScriptTransformation")) {
      throw refused("TRANSFORM (runs a command on the server)");
    }
    if (name.equals("PlanWithUnresolvedIdentifier")) {
      throw refused("the IDENTIFIER clause");
    }
    if (plan instanceof UnresolvedRelation r) {
      checkName(r.multipartIdentifier());
    } else if (plan instanceof UnresolvedTableOrView r) {
      checkName(r.multipartIdentifier());
    } else if (plan instanceof UnresolvedTable r) {
      checkName(r.multipartIdentifier());
    } else if (plan instanceof UnresolvedView r) {
      checkName(r.multipartIdentifier());
    }
    for (Expression e : list(plan.expressions())) {
      visit(e);
    }
    for (LogicalPlan child : list(plan.children())) {
      visit(child, false);
    }
    // Common table expressions hang here, not among the children.
    for (TreeNode<?> inner : list(plan.innerChildren())) {
      if (inner instanceof LogicalPlan p) {
        visit(p, false);
      }
    }
  }

  private void visit(Expression expression) {
    if (expression instanceof UnresolvedFunction f) {
      List<String> parts = list(f.nameParts());
      if (FUNCTIONS.contains(parts.get(parts.size() - 1).toLowerCase(Locale.ROOT))) {
        throw refused("the function " + String.join(".", parts) + " (calls Java methods)");
      }
    }
    if (expression.getClass().getSimpleName().equals("ExpressionWithUnresolvedIdentifier")) {
      throw refused("the IDENTIFIER clause");
    }
    if (expression instanceof SubqueryExpression s) {
      visit(s.plan(), false);
    }
    for (Expression child : list(expression.children())) {
      visit(child);
    }
  }

  /** A relation is a name in the current database, or database.name of a database that exists. */
  private void checkName(Seq<String> identifier) {
    List<String> parts = list(identifier);
    if (parts.size() > 2 && parts.get(0).equalsIgnoreCase("spark_catalog")) {
      parts = parts.subList(1, parts.size());
    }
    if (parts.size() == 1) {
      return;
    }
    if (parts.size() > 2 || !session.catalog().databaseExists(parts.get(0))) {
      throw refused(String.join(".", parts) + " is not in a served database (no reads by path or from other catalogs)");
    }
  }

  private static <T> List<T> list(Seq<T> seq) {
    return CollectionConverters.asJava(seq);
  }

  private static SecurityException refused(String what) {
    return new SecurityException("refused by the read-only serving endpoint: " + what
        + "; only queries over the served databases, SHOW, DESCRIBE, USE and SET are allowed");
  }

  @Override
  public LogicalPlan parseQuery(String sql) throws ParseException {
    return delegate.parseQuery(sql);
  }

  @Override
  public Expression parseExpression(String sql) throws ParseException {
    return delegate.parseExpression(sql);
  }

  @Override
  public TableIdentifier parseTableIdentifier(String sql) throws ParseException {
    return delegate.parseTableIdentifier(sql);
  }

  @Override
  public FunctionIdentifier parseFunctionIdentifier(String sql) throws ParseException {
    return delegate.parseFunctionIdentifier(sql);
  }

  @Override
  public Seq<String> parseMultipartIdentifier(String sql) throws ParseException {
    return delegate.parseMultipartIdentifier(sql);
  }

  @Override
  public StructType parseRoutineParam(String sql) throws ParseException {
    return delegate.parseRoutineParam(sql);
  }

  @Override
  public StructType parseTableSchema(String sql) throws ParseException {
    return delegate.parseTableSchema(sql);
  }

  @Override
  public DataType parseDataType(String sql) throws ParseException {
    return delegate.parseDataType(sql);
  }
}

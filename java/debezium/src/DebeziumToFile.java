// Runs Debezium's embedded engine with the properties of args[0] and appends every record to args[1] as one
// JSON line: {"topic", "key", "value", "headers"} (key/value as the JsonConverter wrote them, null for a
// tombstone's value). Runs until killed. Launched by tests/peer/debezium_runner.py with
// `java -Xmx512m -cp "<jars>/*" DebeziumToFile.java`.
import java.io.FileOutputStream;
import java.io.FileReader;
import java.io.OutputStreamWriter;
import java.io.Writer;
import java.nio.charset.StandardCharsets;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;

import com.fasterxml.jackson.databind.ObjectMapper;

import io.debezium.engine.ChangeEvent;
import io.debezium.engine.DebeziumEngine;
import io.debezium.engine.Header;
import io.debezium.engine.format.Json;
import io.debezium.engine.format.KeyValueHeaderChangeEventFormat;

public class DebeziumToFile {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        try (FileReader reader = new FileReader(args[0], StandardCharsets.UTF_8)) {
            props.load(reader);
        }
        ObjectMapper mapper = new ObjectMapper();
        Writer out = new OutputStreamWriter(new FileOutputStream(args[1], true), StandardCharsets.UTF_8);
        DebeziumEngine<ChangeEvent<String, String>> engine = DebeziumEngine
                .create(KeyValueHeaderChangeEventFormat.of(Json.class, Json.class, Json.class))
                .using(props)
                .notifying(event -> {
                    Map<String, Object> line = new LinkedHashMap<>();
                    line.put("topic", event.destination());
                    line.put("key", event.key());
                    line.put("value", event.value());
                    Map<String, Object> headers = new LinkedHashMap<>();
                    for (Header<?> h : event.headers()) {
                        headers.put(h.getKey(), h.getValue());
                    }
                    line.put("headers", headers);
                    try {
                        synchronized (out) {
                            out.write(mapper.writeValueAsString(line));
                            out.write("\n");
                            out.flush();
                        }
                    }
                    catch (Exception e) {
                        throw new RuntimeException(e);
                    }
                })
                .using((success, message, error) -> {
                    System.err.println("engine stopped: " + message + (error == null ? "" : " " + error));
                    if (error != null) {
                        error.printStackTrace();
                    }
                    System.exit(success ? 0 : 3);
                })
                .build();
        ExecutorService executor = Executors.newSingleThreadExecutor();
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                engine.close();
            }
            catch (Exception e) {
                // exiting anyway
            }
        }));
        executor.execute(engine);
    }
}

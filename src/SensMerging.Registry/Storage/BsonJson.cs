using System.Buffers;
using System.Globalization;
using System.Text;
using System.Text.Json;
using LiteDB;
using JsonSerializer = System.Text.Json.JsonSerializer;

namespace SensMerging.Registry.Storage;

/// <summary>
/// Converts between System.Text.Json text and LiteDB BSON without loss: integers stay Int32/Int64, numbers with a
/// decimal point or exponent become doubles (full precision; LiteDB's own JSON writer rounds doubles), and doubles
/// are written back with a decimal point so typed parameter values keep their kind.
/// </summary>
internal static class BsonJson
{
    public static BsonDocument ToDocument<T>(T value)
    {
        var bytes = JsonSerializer.SerializeToUtf8Bytes(value, RegistryJson.Compact);
        using var json = JsonDocument.Parse(bytes);
        return ToBson(json.RootElement).AsDocument;
    }

    public static T FromDocument<T>(BsonDocument document, params string[] skipFields)
    {
        var buffer = new ArrayBufferWriter<byte>(4096);
        using (var writer = new Utf8JsonWriter(buffer))
        {
            Write(writer, document, skipFields);
        }
        return JsonSerializer.Deserialize<T>(buffer.WrittenSpan, RegistryJson.Compact)
            ?? throw new JsonException($"stored document holds null where a {typeof(T).Name} was expected");
    }

    public static BsonValue ToBson(JsonElement element)
    {
        switch (element.ValueKind)
        {
            case JsonValueKind.Object:
                var doc = new BsonDocument();
                foreach (var p in element.EnumerateObject())
                {
                    doc[p.Name] = ToBson(p.Value);
                }
                return doc;
            case JsonValueKind.Array:
                var array = new BsonArray();
                foreach (var item in element.EnumerateArray())
                {
                    array.Add(ToBson(item));
                }
                return array;
            case JsonValueKind.String:
                return new BsonValue(element.GetString());
            case JsonValueKind.Number:
                var raw = element.GetRawText();
                if (raw.AsSpan().IndexOfAny(".eE") < 0)
                {
                    if (element.TryGetInt32(out var i))
                    {
                        return new BsonValue(i);
                    }
                    if (element.TryGetInt64(out var l))
                    {
                        return new BsonValue(l);
                    }
                }
                return new BsonValue(element.GetDouble());
            case JsonValueKind.True:
                return new BsonValue(true);
            case JsonValueKind.False:
                return new BsonValue(false);
            default:
                return BsonValue.Null;
        }
    }

    private static void Write(Utf8JsonWriter writer, BsonValue value, string[] skipFields)
    {
        switch (value.Type)
        {
            case BsonType.Document:
                writer.WriteStartObject();
                foreach (var (key, v) in value.AsDocument)
                {
                    if (skipFields.Length > 0 && Array.IndexOf(skipFields, key) >= 0)
                    {
                        continue;
                    }
                    writer.WritePropertyName(key);
                    Write(writer, v, []);
                }
                writer.WriteEndObject();
                break;
            case BsonType.Array:
                writer.WriteStartArray();
                foreach (var item in value.AsArray)
                {
                    Write(writer, item, []);
                }
                writer.WriteEndArray();
                break;
            case BsonType.String:
                writer.WriteStringValue(value.AsString);
                break;
            case BsonType.Int32:
                writer.WriteNumberValue(value.AsInt32);
                break;
            case BsonType.Int64:
                writer.WriteNumberValue(value.AsInt64);
                break;
            case BsonType.Double:
                ParameterValue.WriteDouble(writer, value.AsDouble);
                break;
            case BsonType.Decimal:
                writer.WriteNumberValue(value.AsDecimal);
                break;
            case BsonType.Boolean:
                writer.WriteBooleanValue(value.AsBoolean);
                break;
            case BsonType.DateTime:
                writer.WriteStringValue(value.AsDateTime.ToUniversalTime().ToString("O", CultureInfo.InvariantCulture));
                break;
            case BsonType.Binary:
                writer.WriteStringValue(Convert.ToBase64String(value.AsBinary));
                break;
            case BsonType.Guid:
                writer.WriteStringValue(value.AsGuid.ToString());
                break;
            case BsonType.ObjectId:
                writer.WriteStringValue(value.AsObjectId.ToString());
                break;
            default:
                writer.WriteNullValue();
                break;
        }
    }

    /// <summary>For diagnostics: a stored document as JSON text.</summary>
    public static string ToJsonText(BsonDocument document)
    {
        var buffer = new ArrayBufferWriter<byte>(1024);
        using (var writer = new Utf8JsonWriter(buffer))
        {
            Write(writer, document, []);
        }
        return Encoding.UTF8.GetString(buffer.WrittenSpan);
    }
}

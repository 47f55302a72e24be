using SensMerging.Core.SafeTensors;

namespace SensMerging.Core.Tests;

public sealed class SafeTensorsMalformedTests
{
    private static string Problem(Action<SafeTensorsTempDir> make)
    {
        using var dir = new SafeTensorsTempDir();
        make(dir);
        var path = dir.File("bad.safetensors");
        var ex = Assert.Throws<SafeTensorsFormatException>(() => SafeTensorsFile.Open(path).Dispose());
        Assert.StartsWith(path, ex.Message, StringComparison.Ordinal);
        Assert.Equal(path, ex.FilePath);
        return ex.Message;
    }

    private static string Header(string json, int dataBytes) => Problem(d => d.Raw("bad.safetensors", json, dataBytes));

    [Fact]
    public void Too_short_for_the_length_prefix() =>
        Assert.Contains("shorter than the 8-byte", Problem(d => File.WriteAllBytes(d.File("bad.safetensors"), [1, 2, 3])), StringComparison.Ordinal);

    [Fact]
    public void Header_length_over_the_limit() =>
        Assert.Contains("exceeds the limit of 25000000", Problem(d => d.Raw("bad.safetensors", "{}", 0, lengthOverride: 25_000_001)), StringComparison.Ordinal);

    [Fact]
    public void Header_length_past_the_end_of_the_file() =>
        Assert.Contains("exceeds the 2 bytes that follow", Problem(d => d.Raw("bad.safetensors", "{}", 0, lengthOverride: 100)), StringComparison.Ordinal);

    [Fact]
    public void Header_not_starting_with_a_brace() =>
        Assert.Contains("does not start with '{'", Header("[1,2]", 0), StringComparison.Ordinal);

    [Fact]
    public void Header_not_json() =>
        Assert.Contains("not valid JSON", Header("{\"a\": {\"dtype\": F32}}", 0), StringComparison.Ordinal);

    [Fact]
    public void Header_not_utf8() =>
        Assert.Contains("valid", Problem(d =>
        {
            var json = new byte[] { (byte)'{', (byte)'"', 0xFF, 0xFE, (byte)'"', (byte)':', (byte)'1', (byte)'}' };
            var bytes = new byte[8 + json.Length];
            BitConverter.TryWriteBytes(bytes.AsSpan(0, 8), (ulong)json.Length);
            json.CopyTo(bytes, 8);
            File.WriteAllBytes(d.File("bad.safetensors"), bytes);
        }), StringComparison.Ordinal);

    [Fact]
    public void Unknown_dtype_is_named() =>
        Assert.Contains("unknown dtype 'F7'", Header("{\"a\":{\"dtype\":\"F7\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1), StringComparison.Ordinal);

    [Fact]
    public void Negative_shape() =>
        Assert.Contains("'shape' of tensor 'a' holds -1", Header("{\"a\":{\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[0,1]}}", 1), StringComparison.Ordinal);

    [Fact]
    public void Fractional_shape() =>
        Assert.Contains("holds 1.5", Header("{\"a\":{\"dtype\":\"U8\",\"shape\":[1.5],\"data_offsets\":[0,1]}}", 1), StringComparison.Ordinal);

    [Fact]
    public void Missing_offsets() =>
        Assert.Contains("tensor 'a' has no 'data_offsets'", Header("{\"a\":{\"dtype\":\"U8\",\"shape\":[1]}}", 1), StringComparison.Ordinal);

    [Fact]
    public void Offsets_not_a_pair() =>
        Assert.Contains("has 3 values", Header("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1,2]}}", 1), StringComparison.Ordinal);

    [Fact]
    public void Offsets_end_before_begin() =>
        Assert.Contains("is before begin", Header("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,0]}}", 1), StringComparison.Ordinal);

    [Fact]
    public void Duplicate_tensor_name_is_detected() =>
        Assert.Contains("duplicate tensor name 'a'", Header(
            "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}", 2), StringComparison.Ordinal);

    [Fact]
    public void Hole_between_tensors() =>
        Assert.Contains("hole in the data buffer: bytes 1..2", Header(
            "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},\"b\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[2,3]}}", 3), StringComparison.Ordinal);

    [Fact]
    public void Data_not_starting_at_zero() =>
        Assert.Contains("hole in the data buffer: bytes 0..4", Header("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[4,5]}}", 5), StringComparison.Ordinal);

    [Fact]
    public void Overlapping_tensors() =>
        Assert.Contains("overlaps the previous tensor", Header(
            "{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[1,3]}}", 3), StringComparison.Ordinal);

    [Fact]
    public void Size_does_not_match_shape_and_dtype() =>
        Assert.Contains("has 4 bytes (offsets [0, 4]) but shape [2] of F32 needs 8", Header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4), StringComparison.Ordinal);

    [Fact]
    public void File_longer_than_the_header_says() =>
        Assert.Contains("file length mismatch: tensors end at byte 4 of the data buffer, but the file holds 6", Header("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 6), StringComparison.Ordinal);

    [Fact]
    public void File_shorter_than_the_header_says() =>
        Assert.Contains("file length mismatch", Header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4), StringComparison.Ordinal);

    [Fact]
    public void Metadata_values_must_be_strings() =>
        Assert.Contains("'__metadata__' value of 'n' is Number", Header("{\"__metadata__\":{\"n\":1}}", 0), StringComparison.Ordinal);

    [Fact]
    public void Metadata_must_be_an_object() =>
        Assert.Contains("'__metadata__' is String", Header("{\"__metadata__\":\"x\"}", 0), StringComparison.Ordinal);

    [Fact]
    public void Trailing_content_after_the_object() =>
        Assert.Contains("not valid JSON", Header("{} {}", 0), StringComparison.Ordinal);

    [Fact]
    public void Space_padding_and_empty_header_are_fine()
    {
        using var dir = new SafeTensorsTempDir();
        var path = dir.Raw("ok.safetensors", "{\"__metadata__\":{\"a\":\"b\"}}      ", 0);
        using var file = SafeTensorsFile.Open(path);
        Assert.Empty(file.Tensors);
        Assert.Equal("b", file.Metadata["a"]);
    }
}

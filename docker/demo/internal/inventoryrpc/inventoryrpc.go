// Package inventoryrpc declares the demo's gRPC service gotel.demo.Inventory by hand, so the demo
// needs no protoc and no generated code: one unary method, Lookup, whose request is the item's
// name (protobuf's wrapperspb.StringValue) and whose answer is a structpb.Struct with the fields
// sku, name, price_cents and stock. The inventory service serves it, the backend calls it.
package inventoryrpc

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// ServiceName is the full gRPC service name; spans are named ServiceName + "/Lookup".
const ServiceName = "gotel.demo.Inventory"

// LookupMethod is the full method path a client invokes.
const LookupMethod = "/" + ServiceName + "/Lookup"

// Item is what the inventory knows about a product.
type Item struct {
	SKU        string
	Name       string
	PriceCents int
	Stock      int
}

// Catalog is the demo's stock, by name: the inventory service serves it, the backend reads it
// directly when it runs without the inventory service.
var Catalog = map[string]*Item{
	"coffee": {SKU: "SKU-100", Name: "coffee", PriceCents: 450, Stock: 1000},
	"tea":    {SKU: "SKU-101", Name: "tea", PriceCents: 320, Stock: 1000},
	"bagel":  {SKU: "SKU-102", Name: "bagel", PriceCents: 275, Stock: 40},
	"muffin": {SKU: "SKU-103", Name: "muffin", PriceCents: 300, Stock: 25},
}

// ToStruct encodes an Item as the Lookup answer.
func (it *Item) ToStruct() *structpb.Struct {
	return &structpb.Struct{Fields: map[string]*structpb.Value{
		"sku":         structpb.NewStringValue(it.SKU),
		"name":        structpb.NewStringValue(it.Name),
		"price_cents": structpb.NewNumberValue(float64(it.PriceCents)),
		"stock":       structpb.NewNumberValue(float64(it.Stock)),
	}}
}

// FromStruct decodes a Lookup answer.
func FromStruct(s *structpb.Struct) *Item {
	f := s.GetFields()
	return &Item{
		SKU:        f["sku"].GetStringValue(),
		Name:       f["name"].GetStringValue(),
		PriceCents: int(f["price_cents"].GetNumberValue()),
		Stock:      int(f["stock"].GetNumberValue()),
	}
}

// Server is what the inventory service implements.
type Server interface {
	Lookup(ctx context.Context, name string) (*Item, error)
}

func lookupHandler(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
	in := new(wrapperspb.StringValue)
	if err := dec(in); err != nil {
		return nil, err
	}
	it, err := srv.(Server).Lookup(ctx, in.Value)
	if err != nil {
		return nil, err
	}
	return it.ToStruct(), nil
}

// Desc is the service description to register with grpc.Server.RegisterService.
var Desc = grpc.ServiceDesc{
	ServiceName: ServiceName,
	HandlerType: (*Server)(nil),
	Methods:     []grpc.MethodDesc{{MethodName: "Lookup", Handler: lookupHandler}},
}

// Lookup calls the inventory's Lookup method over cc.
func Lookup(ctx context.Context, cc grpc.ClientConnInterface, name string) (*Item, error) {
	out := new(structpb.Struct)
	if err := cc.Invoke(ctx, LookupMethod, wrapperspb.String(name), out); err != nil {
		return nil, err
	}
	return FromStruct(out), nil
}

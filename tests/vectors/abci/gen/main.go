// Command gen writes ABCI messages encoded by CometBFT v0.38.25's own Go types, one JSON
// object per line: {"source", "direction", "type", "frame"} with frame the hex of the
// length-prefixed bytes as CometBFT writes them to a socket. It covers what a live node
// rarely or never sends (the state-sync calls, exceptions, negative and extreme values);
// tests/vectors/abci/record.py records the rest from a running network.
package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/cosmos/gogoproto/proto"

	abci "github.com/cometbft/cometbft/abci/types"
	pcrypto "github.com/cometbft/cometbft/proto/tendermint/crypto"
	ptypes "github.com/cometbft/cometbft/proto/tendermint/types"
)

type vector struct {
	Source    string `json:"source"`
	Direction string `json:"direction"`
	Type      string `json:"type"`
	Frame     string `json:"frame"`
}

func emit(direction, name string, msg proto.Message) {
	var buf bytes.Buffer
	if err := abci.WriteMessage(msg, &buf); err != nil {
		panic(err)
	}
	line, _ := json.Marshal(vector{"cometbft v0.38.25 Go types (gen/main.go)", direction, name, hex.EncodeToString(buf.Bytes())})
	fmt.Println(string(line))
}

func main() {
	when := time.Date(2026, 1, 2, 3, 4, 5, 6007, time.UTC)
	before := time.Date(1960, 1, 1, 0, 0, 0, 1, time.UTC) // negative seconds
	val := abci.Validator{Address: bytes.Repeat([]byte{0xab}, 20), Power: 10}
	key := pcrypto.PublicKey{Sum: &pcrypto.PublicKey_Ed25519{Ed25519: bytes.Repeat([]byte{7}, 32)}}
	empty := pcrypto.PublicKey{Sum: &pcrypto.PublicKey_Ed25519{Ed25519: []byte{}}}
	misbehavior := []abci.Misbehavior{{Type: abci.MisbehaviorType_DUPLICATE_VOTE, Validator: val, Height: 3, Time: before, TotalVotingPower: 40}}
	commit := abci.CommitInfo{Round: 2, Votes: []abci.VoteInfo{{Validator: val, BlockIdFlag: ptypes.BlockIDFlagCommit}, {Validator: val, BlockIdFlag: ptypes.BlockIDFlagAbsent}}}
	params := ptypes.ConsensusParams{Block: &ptypes.BlockParams{MaxBytes: 22020096, MaxGas: -1}, Abci: &ptypes.ABCIParams{VoteExtensionsEnableHeight: 5}}
	snapshot := &abci.Snapshot{Height: 1000, Format: 1, Chunks: 3, Hash: []byte{1, 2, 3}, Metadata: []byte("meta")}
	event := abci.Event{Type: "identity.registered", Attributes: []abci.EventAttribute{{Key: "did", Value: "did:key:z6Mk", Index: true}, {Key: "", Value: "", Index: false}}}

	emit("request", "RequestEcho", abci.ToRequestEcho("héllo"))
	emit("request", "RequestFlush", abci.ToRequestFlush())
	emit("request", "RequestInfo", abci.ToRequestInfo(&abci.RequestInfo{Version: "0.38.25", BlockVersion: 11, P2PVersion: 8, AbciVersion: "2.0.0"}))
	emit("request", "RequestInitChain", abci.ToRequestInitChain(&abci.RequestInitChain{Time: when, ChainId: "c", ConsensusParams: &params, Validators: []abci.ValidatorUpdate{{PubKey: key, Power: 10}}, AppStateBytes: []byte(`{"a":1}`), InitialHeight: 1}))
	emit("request", "RequestInitChain", abci.ToRequestInitChain(&abci.RequestInitChain{}))
	emit("request", "RequestQuery", abci.ToRequestQuery(&abci.RequestQuery{Data: []byte("{}"), Path: "identity/members", Height: -1, Prove: true}))
	emit("request", "RequestCheckTx", abci.ToRequestCheckTx(&abci.RequestCheckTx{Tx: []byte("tx"), Type: abci.CheckTxType_Recheck}))
	emit("request", "RequestCommit", abci.ToRequestCommit())
	emit("request", "RequestListSnapshots", abci.ToRequestListSnapshots(&abci.RequestListSnapshots{}))
	emit("request", "RequestOfferSnapshot", abci.ToRequestOfferSnapshot(&abci.RequestOfferSnapshot{Snapshot: snapshot, AppHash: []byte{9}}))
	emit("request", "RequestLoadSnapshotChunk", abci.ToRequestLoadSnapshotChunk(&abci.RequestLoadSnapshotChunk{Height: 1000, Format: 1, Chunk: 2}))
	emit("request", "RequestApplySnapshotChunk", abci.ToRequestApplySnapshotChunk(&abci.RequestApplySnapshotChunk{Index: 2, Chunk: []byte("chunk"), Sender: "peer"}))
	emit("request", "RequestPrepareProposal", abci.ToRequestPrepareProposal(&abci.RequestPrepareProposal{MaxTxBytes: 1 << 20, Txs: [][]byte{[]byte("a"), {}}, LocalLastCommit: abci.ExtendedCommitInfo{Round: 1, Votes: []abci.ExtendedVoteInfo{{Validator: val, VoteExtension: []byte("x"), ExtensionSignature: []byte("s"), BlockIdFlag: ptypes.BlockIDFlagCommit}}}, Misbehavior: misbehavior, Height: 7, Time: when, NextValidatorsHash: []byte{5}, ProposerAddress: val.Address}))
	emit("request", "RequestProcessProposal", abci.ToRequestProcessProposal(&abci.RequestProcessProposal{Txs: [][]byte{[]byte("a")}, ProposedLastCommit: commit, Misbehavior: misbehavior, Hash: []byte{1}, Height: 7, Time: when, NextValidatorsHash: []byte{5}, ProposerAddress: val.Address}))
	emit("request", "RequestExtendVote", abci.ToRequestExtendVote(&abci.RequestExtendVote{Hash: []byte{1}, Height: 7, Time: when, Txs: [][]byte{[]byte("a")}, ProposedLastCommit: commit, Misbehavior: misbehavior, NextValidatorsHash: []byte{5}, ProposerAddress: val.Address}))
	emit("request", "RequestVerifyVoteExtension", abci.ToRequestVerifyVoteExtension(&abci.RequestVerifyVoteExtension{Hash: []byte{1}, ValidatorAddress: val.Address, Height: 7, VoteExtension: []byte("x")}))
	emit("request", "RequestFinalizeBlock", abci.ToRequestFinalizeBlock(&abci.RequestFinalizeBlock{Txs: [][]byte{[]byte("a"), []byte("b")}, DecidedLastCommit: commit, Misbehavior: misbehavior, Hash: []byte{1}, Height: 1 << 40, Time: when, NextValidatorsHash: []byte{5}, ProposerAddress: val.Address}))
	emit("request", "RequestFinalizeBlock", abci.ToRequestFinalizeBlock(&abci.RequestFinalizeBlock{}))

	emit("response", "ResponseException", abci.ToResponseException("boom"))
	emit("response", "ResponseEcho", abci.ToResponseEcho("héllo"))
	emit("response", "ResponseFlush", abci.ToResponseFlush())
	emit("response", "ResponseInfo", abci.ToResponseInfo(&abci.ResponseInfo{Data: "careledger", Version: "1", AppVersion: 1, LastBlockHeight: 42, LastBlockAppHash: []byte{1, 2}}))
	emit("response", "ResponseInitChain", abci.ToResponseInitChain(&abci.ResponseInitChain{ConsensusParams: &params, Validators: []abci.ValidatorUpdate{{PubKey: key, Power: 10}, {PubKey: empty, Power: 0}}, AppHash: []byte{3}}))
	emit("response", "ResponseQuery", abci.ToResponseQuery(&abci.ResponseQuery{Code: 9, Log: "not found", Info: "i", Index: -2, Key: []byte("k"), Value: []byte("v"), ProofOps: &pcrypto.ProofOps{Ops: []pcrypto.ProofOp{{Type: "t", Key: []byte("k"), Data: []byte("d")}}}, Height: 5, Codespace: "cs"}))
	emit("response", "ResponseCheckTx", abci.ToResponseCheckTx(&abci.ResponseCheckTx{Code: 5, Data: []byte("d"), Log: "bad signature", Info: "i", GasWanted: -1, GasUsed: 2, Events: []abci.Event{event}, Codespace: "cs"}))
	emit("response", "ResponseCommit", abci.ToResponseCommit(&abci.ResponseCommit{RetainHeight: 9}))
	emit("response", "ResponseListSnapshots", abci.ToResponseListSnapshots(&abci.ResponseListSnapshots{Snapshots: []*abci.Snapshot{snapshot, {}}}))
	emit("response", "ResponseOfferSnapshot", abci.ToResponseOfferSnapshot(&abci.ResponseOfferSnapshot{Result: abci.ResponseOfferSnapshot_ABORT}))
	emit("response", "ResponseLoadSnapshotChunk", abci.ToResponseLoadSnapshotChunk(&abci.ResponseLoadSnapshotChunk{Chunk: []byte("chunk")}))
	emit("response", "ResponseApplySnapshotChunk", abci.ToResponseApplySnapshotChunk(&abci.ResponseApplySnapshotChunk{Result: abci.ResponseApplySnapshotChunk_RETRY, RefetchChunks: []uint32{1, 300}, RejectSenders: []string{"p1", "p2"}}))
	emit("response", "ResponsePrepareProposal", abci.ToResponsePrepareProposal(&abci.ResponsePrepareProposal{Txs: [][]byte{[]byte("a"), {}}}))
	emit("response", "ResponseProcessProposal", abci.ToResponseProcessProposal(&abci.ResponseProcessProposal{Status: abci.ResponseProcessProposal_ACCEPT}))
	emit("response", "ResponseProcessProposal", abci.ToResponseProcessProposal(&abci.ResponseProcessProposal{Status: abci.ResponseProcessProposal_REJECT}))
	emit("response", "ResponseExtendVote", abci.ToResponseExtendVote(&abci.ResponseExtendVote{VoteExtension: []byte("x")}))
	emit("response", "ResponseVerifyVoteExtension", abci.ToResponseVerifyVoteExtension(&abci.ResponseVerifyVoteExtension{Status: abci.ResponseVerifyVoteExtension_ACCEPT}))
	emit("response", "ResponseFinalizeBlock", abci.ToResponseFinalizeBlock(&abci.ResponseFinalizeBlock{Events: []abci.Event{event}, TxResults: []*abci.ExecTxResult{{Code: 0, Events: []abci.Event{event}}, {Code: 6, Log: "replay", Data: []byte{1}, Info: "i", GasWanted: 1, GasUsed: 1, Codespace: "c"}}, ValidatorUpdates: []abci.ValidatorUpdate{{PubKey: key, Power: 0}}, ConsensusParamUpdates: &params, AppHash: bytes.Repeat([]byte{0xee}, 32)}))
	emit("response", "ResponseFinalizeBlock", abci.ToResponseFinalizeBlock(&abci.ResponseFinalizeBlock{}))

}
